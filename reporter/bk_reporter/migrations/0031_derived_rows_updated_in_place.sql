-- job_status and host_chain hold one row per job and one per host, and the derive trigger
-- rewrites those rows on every INSERT into events: a job's row up to three times in one
-- statement (its latest run, its counts, its latest success), a host's once. On full pages
-- every new version goes to another page with a new index entry, so these tables and their
-- primary keys grow with the history instead of with the fleet, and every overview reads
-- them whole. With room left on each page an update stays on its page (a heap-only tuple:
-- no index entry, and the next update prunes the versions before it), so the tables stay the
-- size the fleet needs (docs/benchmarks.md). A job's row needs room for three new versions in
-- one statement, a host's for one. CLUSTER rewrites both once at that fill; they are small
-- (a row per job or host), so its lock lasts a moment.
ALTER TABLE job_status SET (fillfactor = 25);
ALTER TABLE host_chain SET (fillfactor = 50);
CLUSTER job_status USING job_status_pkey;
CLUSTER host_chain USING host_chain_pkey;

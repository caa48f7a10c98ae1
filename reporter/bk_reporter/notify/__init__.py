"""Notifications: fleet state turned into alerts, their lifecycle, and delivery through Apprise."""

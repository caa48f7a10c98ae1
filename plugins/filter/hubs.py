# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which hub serves a client: the one rule the client role and the hub role both apply."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence


def hub_of(client_hub_host: str, hubs: Sequence[str]) -> str:
    """The client's hub: the one it names, else the only host of bk_hub, else none ('')."""
    if client_hub_host:
        return client_hub_host
    return hubs[0] if len(hubs) == 1 else ""


def clients_of(clients: Sequence[str], hub: str, hostvars: Mapping[str, Any], hubs: Sequence[str]) -> List[str]:
    """The clients whose hub (by hub_of) is this one, in inventory order."""
    return [name for name in clients if hub_of(hostvars[name].get("client_hub_host", ""), hubs) == hub]


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"hub_of": hub_of, "clients_of": clients_of}

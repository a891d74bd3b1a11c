"""Applying a provider's service list to the catalog: the seam the provider sync calls on its own
connection, so the whole sync is one transaction (like ``server/wallet/ledger.py`` for money).

The rules, in ``plan`` (pure, so a dry run is the same code without the writes):
- a service new upstream is created, priced by the pricing rules, on sale if the provider says so;
- the provider's cost is kept apart from our price (``provider_rate_micros`` in its currency,
  ``cost_micros`` in ours at the exchange rate in force, which is stored with it);
- a cost rise of more than the configured jump, or above a hand-set price, quarantines the
  service (not sold) until an admin accepts the new price; smaller changes reprice by the rules;
- a service gone upstream is disabled, not deleted; if it comes back it goes on sale again only if
  the sync was what took it off sale (``disabled_by_sync``), never when staff had it off;
- an offer the catalog cannot take (unknown type, bad quantities, unstorable or absurd figures) is
  skipped and reported; an existing service whose offer became unusable is quarantined (not sold)
  with the reason, never left on sale on its old terms;
- a provider's category name is a catalog category's whatever its letter case (``category_key``):
  "instagram" joins "Instagram", never a second category beside it;
- a service moves category only when the provider's category name changed since the last sync
  (``upstream_category``; not just its letter case), so categories staff renamed and services they
  moved stay put; a new service (or one moved upstream) joins the category where its upstream
  siblings live, so it follows a staff rename too;
- fields staff edited (name, description, category, drip-feed offered) are never overwritten; the
  provider's own drip-feed is kept apart (``upstream_dripfeed``): when the panel offers drip-feed
  and the provider has none, smm sends the runs itself (``server/orders/dripfeed.py``);
- an empty list while some of the provider's services are still listed is refused (the sync fails,
  nothing changes): providers answer `[]` during outages and deploys far more often than they stop
  selling everything, and disabling a whole catalog on one bad answer stops all sales; staff who
  mean it disable the provider;
- a second sync with nothing new changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

from smm.v1 import events_pb2

from server.catalog.errors import empty_service_list
from server.catalog.logic import MAX_QUANTITY, SERVICE_CHANGED, category_key
from server.catalog.pricing import BPS, Rules
from server.catalog.repo import Conn, PostgresCatalogRepo, SyncedService
from server.common.money import MAX_MICROS, convert_micros, format_micros
from server.common.outbox import add_event
from server.common.service_types import SERVICE_TYPES
from server.common.text import UNSTORABLE, storable

REFILL_DAYS_DEFAULT = 30  # the protocol has no refill window; staff adjust it per service
UNCATEGORISED = "Uncategorised"
CHUNK = 1000
MAX_LISTED_CHANGES = 1000


@dataclass(frozen=True)
class Offer:
    """One upstream service, in the provider's currency; ``type`` in our spelling (``DEFAULT``)."""

    upstream_id: str
    name: str
    type: str
    category: str
    rate_micros: int
    min_quantity: int
    max_quantity: int
    refill: bool
    cancel: bool
    dripfeed: bool
    description: str
    problem: str = ""  # why the provider's entry cannot be read (its figures are then 0), or ""


@dataclass(frozen=True)
class ProviderTerms:
    provider_id: int
    currency: str
    exchange_rate: Decimal  # panel units per provider unit
    enable_new: bool
    jump_bps: int  # a cost rise above this quarantines


@dataclass(frozen=True)
class Change:
    action: str  # create, update, quarantine, release, disable, skip
    upstream_id: str
    service_id: int
    name: str
    fields: tuple[str, ...] = ()
    old_rate_micros: int | None = None
    new_rate_micros: int | None = None
    reason: str = ""


@dataclass
class Counts:
    total: int = 0
    created: int = 0
    updated: int = 0
    quarantined: int = 0
    disabled: int = 0
    unchanged: int = 0
    skipped: int = 0


@dataclass
class Plan:
    counts: Counts
    changes: list[Change] = field(default_factory=list)
    new_categories: list[str] = field(default_factory=list)
    # (category name, row) for creates: the category id is known only once categories exist.
    creates: list[tuple[str, SyncedService]] = field(default_factory=list)
    updates: list[tuple[str | None, SyncedService]] = field(default_factory=list)


def _clean(offer: Offer) -> Offer | str:
    """The offer trimmed to what the catalog accepts, or why it cannot be imported."""
    if not offer.upstream_id or len(offer.upstream_id) > 100 or UNSTORABLE.search(offer.upstream_id):
        return "bad upstream id"
    if offer.problem:
        return offer.problem
    if offer.type not in SERVICE_TYPES:
        return f"unsupported service type {offer.type!r}"
    if offer.rate_micros < 0:
        return "negative rate"
    if offer.rate_micros > MAX_MICROS:
        return f"rate {format_micros(offer.rate_micros)} is too large"
    if not 1 <= offer.min_quantity <= MAX_QUANTITY or offer.max_quantity < offer.min_quantity:
        return f"bad quantity range {offer.min_quantity}..{offer.max_quantity}"
    name = " ".join(storable(offer.name).split())[:300] or f"Service {offer.upstream_id}"
    category = " ".join(storable(offer.category).split())[:200] or UNCATEGORISED
    return replace(
        offer,
        name=name,
        category=category,
        description=storable(offer.description)[:10_000],
        max_quantity=min(offer.max_quantity, MAX_QUANTITY),
    )


def plan(
    existing: list[SyncedService],
    offers: list[Offer],
    terms: ProviderTerms,
    rules: Rules,
    categories: dict[str, int],
    *,
    now: datetime | None = None,
) -> Plan:
    now = now or datetime.now(UTC)
    if not offers and any(s.gone_upstream_time is None for s in existing):
        raise empty_service_list()
    result = Plan(Counts(total=len(offers)))
    homes = _CategoryHomes(categories, _sibling_homes(existing))
    by_upstream = {s.upstream_service_id: s for s in existing}
    seen: set[str] = set()

    for raw in offers:
        if raw.upstream_id in seen:
            result.counts.skipped += 1
            result.changes.append(Change("skip", raw.upstream_id, 0, raw.name, reason="listed twice"))
            continue
        seen.add(raw.upstream_id)
        current = by_upstream.get(raw.upstream_id)
        offer = _clean(raw)
        if isinstance(offer, str):
            _plan_unusable(result, current, raw, offer)
            continue
        cost = convert_micros(offer.rate_micros, terms.exchange_rate)
        if cost > MAX_MICROS:
            _plan_unusable(result, current, raw, f"cost {format_micros(cost)} is too large")
            continue
        if current is None:
            category_id = homes.find(offer.category)
            price = rules.price(cost, None, category_id)
            if price > MAX_MICROS:
                _plan_unusable(result, current, raw, f"price {format_micros(price)} is too large")
                continue
            category_name = offer.category if category_id else homes.want(offer.category)
            row = SyncedService(
                id=0,
                upstream_service_id=offer.upstream_id,
                category_id=category_id,
                name=offer.name,
                description=offer.description,
                type=offer.type,
                min_quantity=offer.min_quantity,
                max_quantity=offer.max_quantity,
                refill=offer.refill,
                refill_days=REFILL_DAYS_DEFAULT if offer.refill else 0,
                cancel=offer.cancel,
                dripfeed=offer.dripfeed,
                upstream_dripfeed=offer.dripfeed,
                enabled=terms.enable_new,
                rate_micros=price,
                provider_rate_micros=offer.rate_micros,
                provider_currency=terms.currency,
                exchange_rate=terms.exchange_rate,
                cost_micros=cost,
                manual_price=False,
                admin_edited=[],
                quarantined=False,
                quarantine_reason="",
                pending_provider_rate_micros=None,
                pending_exchange_rate=None,
                gone_upstream_time=None,
                disabled_by_sync=False,
                upstream_category=offer.category,
            )
            result.creates.append((category_name, row))
            result.counts.created += 1
            result.changes.append(
                Change("create", offer.upstream_id, 0, offer.name, new_rate_micros=row.rate_micros)
            )
            continue
        problem = _plan_update(result, current, offer, cost, terms, rules, homes)
        if problem:
            _plan_unusable(result, current, raw, problem)

    for current in existing:
        if current.upstream_service_id not in seen and current.gone_upstream_time is None:
            # Only a service on sale is the sync's to put back when it returns.
            gone = replace(current, enabled=False, disabled_by_sync=current.enabled, gone_upstream_time=now)
            result.updates.append((None, gone))
            result.counts.disabled += 1
            result.changes.append(
                Change(
                    "disable",
                    current.upstream_service_id,
                    current.id,
                    current.name,
                    tuple(_changed_fields(current, gone)),
                    reason="gone upstream",
                )
            )
    result.new_categories = sorted(homes.wanted.values())
    return result


class _CategoryHomes:
    """The catalog category of a provider's category name, letter case aside (``category_key``), so
    the provider's "instagram" is our "Instagram", never a second category beside it. Where the
    provider's upstream siblings live comes first, then the catalog's names; an exact spelling first
    within each (a panel may hold duplicates from before case was ignored; the older one wins)."""

    def __init__(self, catalog: dict[str, int], siblings: dict[str, int]) -> None:
        self._siblings, self._sibling_keys = siblings, _by_key(siblings)
        self._catalog, self._catalog_keys = catalog, _by_key(catalog)
        self.wanted: dict[str, str] = {}  # names no category has yet: by key, the first spelling met

    def find(self, name: str) -> int:
        """The category id of ``name``, or 0 if none has it yet."""
        key = category_key(name)
        return (
            self._siblings.get(name)
            or self._sibling_keys.get(key)
            or self._catalog.get(name)
            or self._catalog_keys.get(key)
            or 0
        )

    def want(self, name: str) -> str:
        """A category to create for ``name``: the one spelling the sync creates it under."""
        return self.wanted.setdefault(category_key(name), name)


def _by_key(names: dict[str, int]) -> dict[str, int]:
    folded: dict[str, int] = {}
    for name, category_id in sorted(names.items(), key=lambda item: item[1]):
        folded.setdefault(category_key(name), category_id)
    return folded


def _sibling_homes(existing: list[SyncedService]) -> dict[str, int]:
    """Where the services of each upstream category live now: a category staff renamed keeps its
    services' upstream name, so a new service from that upstream category joins its siblings (and
    their pricing rule) instead of a fresh category under the provider's name. Services staff moved
    one by one do not count; if the siblings are split, most of them decide."""
    votes: dict[str, Counter[int]] = {}
    for service in existing:
        if service.upstream_category and service.category_id and "category" not in service.admin_edited:
            votes.setdefault(service.upstream_category, Counter())[service.category_id] += 1
    return {name: counts.most_common(1)[0][0] for name, counts in votes.items()}


def _plan_unusable(result: Plan, current: SyncedService | None, raw: Offer, problem: str) -> None:
    """An offer the catalog cannot take: skipped and reported; an existing service linked to it
    is quarantined (not sold, whatever its old terms were) until a later sync finds the offer
    usable again. Any pending price decision is dropped: there is no usable price to accept."""
    result.counts.skipped += 1
    if current is None:
        result.changes.append(Change("skip", raw.upstream_id, 0, storable(raw.name), reason=problem))
        return
    reason = f"the provider's offer cannot be used: {problem}"
    target = replace(
        current,
        quarantined=True,
        quarantine_reason=reason,
        pending_provider_rate_micros=None,
        pending_exchange_rate=None,
    )
    fields = tuple(_changed_fields(current, target))
    if fields:
        result.updates.append((None, target))
    result.changes.append(
        Change(
            "quarantine" if fields else "skip",
            storable(raw.upstream_id),
            current.id,
            current.name,
            fields,
            current.rate_micros,
            current.rate_micros,
            reason,
        )
    )


def _plan_update(
    result: Plan,
    current: SyncedService,
    offer: Offer,
    cost: int,
    terms: ProviderTerms,
    rules: Rules,
    homes: _CategoryHomes,
) -> str:
    """Plans the update of a known service; returns why the offer cannot be used ("" if it can)."""
    edited = set(current.admin_edited)
    target = current
    category_name: str | None = None
    if "name" not in edited:
        target = replace(target, name=offer.name)
    if "description" not in edited:
        target = replace(target, description=offer.description)
    # Only a change of the provider's category moves the service: staff's renames and moves stick,
    # and so they do when the provider only writes its category name in other letter case.
    moved_upstream = category_key(offer.category) != category_key(current.upstream_category)
    if "category" not in edited and moved_upstream:
        category_id = homes.find(offer.category)
        if category_id != current.category_id:
            category_name = offer.category
            target = replace(target, category_id=category_id)
    refill_days = current.refill_days if offer.refill else 0
    if offer.refill and not refill_days:
        refill_days = REFILL_DAYS_DEFAULT
    target = replace(
        target,
        type=offer.type,
        min_quantity=offer.min_quantity,
        max_quantity=offer.max_quantity,
        refill=offer.refill,
        refill_days=refill_days,
        cancel=offer.cancel,
        dripfeed=current.dripfeed if "dripfeed" in edited else offer.dripfeed,
        upstream_dripfeed=offer.dripfeed,
        provider_currency=terms.currency,
        upstream_category=offer.category,
    )
    if current.gone_upstream_time is not None:  # back upstream: on sale again if the sync took it off
        target = replace(
            target,
            enabled=current.enabled or current.disabled_by_sync,
            disabled_by_sync=False,
            gone_upstream_time=None,
        )

    action = "update"
    reason = ""
    same_inputs = (
        current.provider_rate_micros == offer.rate_micros and current.exchange_rate == terms.exchange_rate
    )
    same_pending = (
        current.quarantined
        and current.pending_provider_rate_micros == offer.rate_micros
        and current.pending_exchange_rate == terms.exchange_rate
    )
    if same_pending or (same_inputs and not current.quarantined):
        if not current.manual_price and not current.quarantined and current.cost_micros is not None:
            target = replace(
                target, rate_micros=rules.price(current.cost_micros, current.id, target.category_id)
            )
    else:
        reason = _quarantine_reason(current, cost, terms.jump_bps)
        if reason:
            action = "quarantine"
            target = replace(
                target,
                quarantined=True,
                quarantine_reason=reason,
                pending_provider_rate_micros=offer.rate_micros,
                pending_exchange_rate=terms.exchange_rate,
            )
        else:
            action = "release" if current.quarantined else "update"
            target = replace(
                target,
                provider_rate_micros=offer.rate_micros,
                exchange_rate=terms.exchange_rate,
                cost_micros=cost,
                quarantined=False,
                quarantine_reason="",
                pending_provider_rate_micros=None,
                pending_exchange_rate=None,
            )
            if not current.manual_price:
                target = replace(target, rate_micros=rules.price(cost, current.id, target.category_id))

    if target.rate_micros > MAX_MICROS:
        return f"price {format_micros(target.rate_micros)} is too large"
    if category_name and not target.category_id:
        category_name = homes.want(category_name)
    fields = tuple(_changed_fields(current, target))
    if not fields:
        result.counts.unchanged += 1
        return ""
    result.updates.append((category_name, target))
    if action == "quarantine":
        result.counts.quarantined += 1
    else:
        result.counts.updated += 1
    result.changes.append(
        Change(
            action,
            offer.upstream_id,
            current.id,
            target.name,
            fields,
            current.rate_micros,
            target.rate_micros,
            reason,
        )
    )
    return ""


def _quarantine_reason(current: SyncedService, cost: int, jump_bps: int) -> str:
    old = current.cost_micros
    if old is not None and cost > old and (cost - old) * BPS > old * jump_bps:
        return (
            f"provider cost rose from {format_micros(old)} to {format_micros(cost)}, "
            f"more than {format_micros(jump_bps * 100, min_fraction_digits=0)}%"
        )
    if current.manual_price and cost > current.rate_micros:
        return f"provider cost {format_micros(cost)} is above our price {format_micros(current.rate_micros)}"
    return ""


_COMPARED = (
    "name",
    "description",
    "category_id",
    "type",
    "min_quantity",
    "max_quantity",
    "refill",
    "refill_days",
    "cancel",
    "dripfeed",
    "upstream_dripfeed",
    "enabled",
    "rate_micros",
    "provider_rate_micros",
    "provider_currency",
    "exchange_rate",
    "cost_micros",
    "quarantined",
    "quarantine_reason",
    "pending_provider_rate_micros",
    "pending_exchange_rate",
    "gone_upstream_time",
    "disabled_by_sync",
    "upstream_category",
)


def _changed_fields(old: SyncedService, new: SyncedService) -> list[str]:
    return [name for name in _COMPARED if getattr(old, name) != getattr(new, name)]


# ---------------------------------------------------------------------------- applying a plan

Progress = Callable[[int, int], Awaitable[None]]


async def sync_offers(
    conn: Conn,
    offers: list[Offer],
    terms: ProviderTerms,
    *,
    dry_run: bool,
    progress: Progress | None = None,
) -> Plan:
    """Plan and (unless ``dry_run``) apply, inside the caller's transaction."""
    repo = PostgresCatalogRepo()
    existing = await repo.lock_synced_services(conn, terms.provider_id)
    categories = await repo.category_ids(conn)
    rules = Rules(await repo.pricing_rules(conn))
    result = plan(existing, offers, terms, rules, categories)
    if dry_run:
        return result
    if result.new_categories:
        categories.update(await repo.ensure_categories(conn, result.new_categories))
    creates = [_with_category(row, name, categories, rules) for name, row in result.creates]
    updates = [_with_category(row, name, categories, rules) if name else row for name, row in result.updates]
    done = 0
    total = len(creates) + len(updates)
    for start in range(0, len(creates), CHUNK):
        await repo.insert_synced_services(conn, terms.provider_id, creates[start : start + CHUNK])
        done += len(creates[start : start + CHUNK])
        if progress:
            await progress(done, total)
    for start in range(0, len(updates), CHUNK):
        await repo.update_synced_services(conn, updates[start : start + CHUNK])
        done += len(updates[start : start + CHUNK])
        if progress:
            await progress(done, total)
    if total:
        changed = [row.id for row in updates][:MAX_LISTED_CHANGES]
        await add_event(conn, SERVICE_CHANGED, events_pb2.CatalogChanged(service_ids=changed))
    return result


def _with_category(
    row: SyncedService, name: str | None, categories: dict[str, int], rules: Rules
) -> SyncedService:
    if name is None or row.category_id:
        return row
    category_id = categories[name]
    # A new category has no rule of its own: the default applies, as planned; recomputed for clarity.
    rate = row.rate_micros
    if not row.manual_price and row.cost_micros is not None and not row.quarantined:
        rate = rules.price(row.cost_micros, row.id or None, category_id)
    return replace(row, category_id=category_id, rate_micros=rate)

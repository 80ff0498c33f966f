"""The rows of every reference table: one generator per table, each yielding Arrow tables whose
columns match the table's.

Realistic traffic: Zipf-like route popularity, lognormal latency with a long tail, users with a
skewed activity, and the incidents of the plan (error burst, slow period, gap, 429 burst, failing
webhook jobs, a stuck job).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from housekeeping.demo.clock import DAY_US, HOUR_US, MINUTE_US
from housekeeping.demo.columns import (
    choice,
    ids,
    ips_for,
    pick,
    sha256_hex,
    skewed_user_ids,
    timestamps,
    uuid4_strings,
)
from housekeeping.demo.incidents import INCIDENT_LAYOUT, IncidentKind
from housekeeping.demo.plan import CHUNK_ROWS, Observed, Plan, minute_chunks
from housekeeping.demo.schema import JOB_STATUSES


def generate(plan: Plan, load: Callable[[str, Iterator[pa.Table], int], None]) -> Observed:
    """Draw every table's rows in order and hand them to ``load(table, batches, total)``."""
    observed = Observed()
    load("revoked_tokens", _token_batches(plan), plan.tokens)
    error_batches: list[pa.Table] = []
    load("request_logs", _request_batches(plan, error_batches), plan.requests)
    errors = _number_rows(error_batches)
    load("error_logs", iter(errors), sum(batch.num_rows for batch in errors))
    load("audit_logs", _audit_batches(plan), plan.audit)
    load("jobs", _job_batches(plan, observed), plan.jobs)
    load("api_usage", _api_usage_batches(plan), plan.api_usage)
    return observed


_TOKEN_LIFETIMES_US = (  # access tokens, short sessions, day sessions, 7 and 30 day refresh tokens
    (15 * MINUTE_US, 0.20),
    (HOUR_US, 0.10),
    (DAY_US, 0.10),
    (7 * DAY_US, 0.20),
    (30 * DAY_US, 0.40),
)


def _token_batches(plan: Plan) -> Iterator[pa.Table]:
    rng = plan.rng("revoked_tokens")
    lifetimes = np.array([lifetime for lifetime, _ in _TOKEN_LIFETIMES_US], dtype=np.int64)
    counts = plan.minute_counts(rng, plan.tokens, gap=False)
    for first_row, revoked_at in minute_chunks(counts, plan.origin_us, rng):
        rows = len(revoked_at)
        lifetime = lifetimes[choice(rng, [weight for _, weight in _TOKEN_LIFETIMES_US], rows)]
        # Revoked (logout, rotation) at a random point of its life: expiry = issued + lifetime.
        remaining = ((1.0 - rng.random(rows)) * lifetime).astype(np.int64)
        yield pa.table(
            {
                "id": ids(first_row, rows),
                "user_id": pa.array(skewed_user_ids(rng, rows, plan.users)),
                "token_hash": sha256_hex(rng, rows),
                "revoked_at": timestamps(revoked_at),
                "expires_at": timestamps(revoked_at + remaining),
            }
        )


# (method, route, median latency in ms), most popular first: popularity is Zipf-like by rank.
_ENDPOINTS = (
    ("GET", "/api/v1/users/:id", 45),
    ("GET", "/health", 4),
    ("GET", "/api/v1/orders", 80),
    ("GET", "/api/v1/products", 60),
    ("GET", "/api/v1/products/:id", 35),
    ("POST", "/api/v1/auth/refresh", 30),
    ("GET", "/api/v1/orders/:id", 50),
    ("GET", "/api/v1/cart", 40),
    ("POST", "/api/v1/cart/items", 55),
    ("GET", "/api/v1/search", 120),
    ("POST", "/api/v1/orders", 140),
    ("GET", "/api/v1/notifications", 45),
    ("POST", "/api/v1/auth/login", 110),
    ("PATCH", "/api/v1/users/:id", 70),
    ("GET", "/api/v1/categories", 25),
    ("DELETE", "/api/v1/cart/items/:id", 40),
    ("POST", "/api/v1/events", 20),
    ("GET", "/api/v1/users/:id/orders", 90),
    ("POST", "/api/v1/payments", 150),
    ("GET", "/api/v1/invoices/:id", 75),
    ("POST", "/api/v1/auth/logout", 25),
    ("GET", "/api/v1/reviews", 65),
    ("POST", "/api/v1/reviews", 95),
    ("PUT", "/api/v1/users/:id/settings", 60),
    ("GET", "/api/v1/reports/summary", 130),
    ("POST", "/api/v1/webhooks/stripe", 85),
    ("GET", "/api/v1/admin/users", 110),
    ("POST", "/api/v1/uploads", 140),
    ("GET", "/api/v1/feature-flags", 15),
    ("GET", "/metrics", 10),
)
_ENDPOINT_WEIGHTS = [1.0 / rank**1.1 for rank in range(1, len(_ENDPOINTS) + 1)]
_METHODS = pa.array([method for method, _, _ in _ENDPOINTS])
_ROUTES = pa.array([route for _, route, _ in _ENDPOINTS])
_MEDIAN_MS = np.array([median for _, _, median in _ENDPOINTS], dtype=np.float64)
_IS_GET = np.array([method == "GET" for method, _, _ in _ENDPOINTS])
_IS_POST = np.array([method == "POST" for method, _, _ in _ENDPOINTS])
_IS_DELETE = np.array([method == "DELETE" for method, _, _ in _ENDPOINTS])
_HEALTH = next(i for i, (_, route, _) in enumerate(_ENDPOINTS) if route == "/health")
_BURST_ROUTE = next(
    route for kind, _, _, route in INCIDENT_LAYOUT if kind is IncidentKind.ERROR_BURST
)
_BURST_ENDPOINT = next(i for i, (_, route, _) in enumerate(_ENDPOINTS) if route == _BURST_ROUTE)

_STATUS_CODES = np.array(
    [200, 301, 302, 304, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504]
)
# About 0.25 % 5xx outside incidents: well under the 2 % warning threshold.
_STATUS_WEIGHTS = [
    0.9285, 0.003, 0.005, 0.012, 0.012, 0.008, 0.004, 0.015, 0.002, 0.004,
    0.004, 0.0012, 0.0005, 0.0005, 0.0003,
]  # fmt: skip
_BURST_STATUS_CODES = np.array([500, 502, 503, 504])
_BURST_STATUS_WEIGHTS = [0.6, 0.1, 0.2, 0.1]
# Share of the requests in an incident window that the incident takes over.
_ERROR_BURST_SHARE = 0.4
_RATE_LIMIT_SHARE = 0.35
_SLOW_MEDIAN_MS = 1800.0

_USER_AGENTS = pa.array(
    [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "ExampleApp-iOS/5.12.0 (iPhone; iOS 17.4)",
        "ExampleApp-Android/5.12.0 (Android 14)",
        "okhttp/4.12.0",
        "python-requests/2.31.0",
        "curl/8.5.0",
        "kube-probe/1.29",
    ]
)
_USER_AGENT_WEIGHTS = [0.34, 0.18, 0.06, 0.2, 0.14, 0.04, 0.025, 0.015, 0.0]
_KUBE_PROBE = len(_USER_AGENT_WEIGHTS) - 1


def _stack(name: str, message: str, frames: Sequence[tuple[str, str, int]]) -> str:
    lines = [f"{name}: {message}"]
    lines += [
        f"    at {function} (/app/src/{path}:{line}:{(line * 7) % 40 + 5})"
        for function, path, line in frames
    ]
    return "\n".join(lines)


_ERRORS = (  # error_name, message, frames; the first one is the error burst's
    (
        "DatabaseError",
        "connection pool exhausted: timed out after 5000 ms waiting for a connection",
        (("Pool.acquire", "db/pool.js", 88), ("PaymentRepository.create", "payments/repository.js", 41),
         ("createPayment", "routes/payments.js", 57)),
    ),
    (
        "TypeError",
        "Cannot read properties of undefined (reading 'id')",
        (("serializeOrder", "orders/serializer.js", 23), ("listOrders", "routes/orders.js", 112)),
    ),
    (
        "ValidationError",
        "unexpected null in required field 'currency'",
        (("validate", "lib/schema.js", 64), ("createOrder", "routes/orders.js", 148)),
    ),
    (
        "QueryTimeoutError",
        "canceling statement due to statement timeout",
        (("Query.run", "db/query.js", 130), ("search", "routes/search.js", 36)),
    ),
    (
        "UpstreamError",
        "upstream responded 502 Bad Gateway",
        (("HttpClient.send", "lib/http.js", 77), ("fetchInventory", "products/inventory.js", 19)),
    ),
    (
        "ServiceUnavailableError",
        "dependency unavailable: circuit breaker open for inventory-service",
        (("CircuitBreaker.call", "lib/breaker.js", 52), ("fetchInventory", "products/inventory.js", 19)),
    ),
    (
        "GatewayTimeoutError",
        "upstream request timed out after 30000 ms",
        (("HttpClient.send", "lib/http.js", 91), ("renderSummary", "reports/summary.js", 66)),
    ),
)  # fmt: skip
_ERROR_NAMES = pa.array([name for name, _, _ in _ERRORS])
_ERROR_MESSAGES = pa.array([message for _, message, _ in _ERRORS])
_ERROR_STACKS = pa.array([_stack(*error) for error in _ERRORS])
_APPLICATION_ERRORS = np.array([1, 2, 3])  # what a plain 500 is made of
_ERROR_FOR_STATUS = {502: 4, 503: 5, 504: 6}


def _ordinary_status(rng: np.random.Generator, endpoint: np.ndarray) -> np.ndarray:
    """Status codes of ordinary traffic (about 0.25 % 5xx), consistent with each method."""
    status = _STATUS_CODES[choice(rng, _STATUS_WEIGHTS, len(endpoint))]
    status[endpoint == _HEALTH] = 200
    status[(status == 304) & ~_IS_GET[endpoint]] = 200
    status[(status == 200) & _IS_POST[endpoint]] = 201
    status[(status == 200) & _IS_DELETE[endpoint]] = 204
    return status


def _request_tables(
    rng: np.random.Generator,
    ts: np.ndarray,
    endpoint: np.ndarray,
    status: np.ndarray,
    duration: np.ndarray,
    users: int,
    burst: np.ndarray | None = None,
) -> tuple[pa.Table, pa.Table | None]:
    """The request logs (no ids) of ``ts`` (µs) and the error logs of their 5xx (None without
    any); ``burst`` marks the error burst's rows, whose errors are the burst's own."""
    rows = len(ts)
    health = endpoint == _HEALTH
    is_429 = status == 429
    duration[is_429] = 3.0 * np.exp(0.4 * rng.standard_normal(int(is_429.sum())))

    anonymous = (rng.random(rows) < 0.25) | health
    user_ids = skewed_user_ids(rng, rows, users)
    agent = choice(rng, _USER_AGENT_WEIGHTS, rows)
    agent[health] = _KUBE_PROBE
    request_ids = uuid4_strings(rng, rows)
    routes = pick(_ROUTES, endpoint)

    errors = None
    failed = status >= 500
    if failed.any():
        error_kind = _APPLICATION_ERRORS[rng.integers(0, len(_APPLICATION_ERRORS), rows)]
        for code, kind in _ERROR_FOR_STATUS.items():
            error_kind[status == code] = kind
        if burst is not None:
            error_kind[burst] = 0
        kinds = error_kind[failed]
        errors = pa.table(
            {
                "request_id": request_ids.filter(pa.array(failed)),
                "ts": timestamps(ts[failed]),
                "route": routes.filter(pa.array(failed)),
                "error_name": pick(_ERROR_NAMES, kinds),
                "message": pick(_ERROR_MESSAGES, kinds),
                "stack": pick(_ERROR_STACKS, kinds),
            }
        )
    requests = pa.table(
        {
            "request_id": request_ids,
            "ts": timestamps(ts),
            "method": pick(_METHODS, endpoint),
            "route": routes,
            "status_code": pa.array(status.astype(np.int32)),
            "duration_ms": pa.array(np.round(duration, 3)),
            "ip": ips_for(rng, user_ids, anonymous),
            "user_id": pa.array(user_ids, mask=anonymous),
            "user_agent": pick(_USER_AGENTS, agent),
        }
    )
    return requests, errors


def _request_batches(plan: Plan, error_batches: list[pa.Table]) -> Iterator[pa.Table]:
    """Request logs; the 5xx rows' error logs are appended to ``error_batches`` (ids unset)."""
    rng = plan.rng("request_logs")
    counts = plan.minute_counts(rng, plan.requests, gap=True)
    error_burst = plan.windows[IncidentKind.ERROR_BURST]
    slow_period = plan.windows[IncidentKind.SLOW_PERIOD]
    rate_limited = plan.windows[IncidentKind.RATE_LIMIT_BURST]
    for first_row, ts in minute_chunks(counts, plan.origin_us, rng):
        rows = len(ts)
        endpoint = choice(rng, _ENDPOINT_WEIGHTS, rows)
        burst = error_burst.mask(ts) & (rng.random(rows) < _ERROR_BURST_SHARE)
        endpoint[burst] = _BURST_ENDPOINT
        health = endpoint == _HEALTH

        status = _ordinary_status(rng, endpoint)
        status[burst] = _BURST_STATUS_CODES[choice(rng, _BURST_STATUS_WEIGHTS, int(burst.sum()))]
        throttled = rate_limited.mask(ts) & (rng.random(rows) < _RATE_LIMIT_SHARE) & ~health
        status[throttled] = 429

        duration = _MEDIAN_MS[endpoint] * np.exp(0.65 * rng.standard_normal(rows))
        # A thin heavy tail: a few requests take seconds (lock waits, cold caches).
        tail = rng.random(rows) < 0.004
        duration[tail] += 1000.0 * (1.0 + np.minimum(rng.pareto(1.5, int(tail.sum())), 29.0))
        slow = slow_period.mask(ts)
        duration[slow] = _SLOW_MEDIAN_MS * np.exp(0.6 * rng.standard_normal(int(slow.sum())))

        requests, errors = _request_tables(
            rng, ts, endpoint, status, duration, plan.users, burst=burst
        )
        if errors is not None:
            error_batches.append(errors)
        yield requests.add_column(0, "id", ids(first_row, rows))


def _number_rows(batches: list[pa.Table]) -> list[pa.Table]:
    """Give the buffered error logs their ids, re-cut into CHUNK_ROWS-sized batches."""
    if not batches:
        return []
    table = pa.concat_tables(batches)
    table = table.add_column(0, "id", ids(0, table.num_rows))
    return [table.slice(offset, CHUNK_ROWS) for offset in range(0, table.num_rows, CHUNK_ROWS)]


_AUDIT_ACTIONS = (  # action, target kind, weight
    ("user.login", "user", 0.35),
    ("user.logout", "user", 0.15),
    ("token.revoke", "token", 0.1),
    ("order.create", "order", 0.12),
    ("order.cancel", "order", 0.03),
    ("order.refund", "order", 0.02),
    ("settings.update", "user", 0.08),
    ("user.password_change", "user", 0.04),
    ("apikey.create", "apikey", 0.03),
    ("apikey.revoke", "apikey", 0.02),
    ("role.grant", "user", 0.02),
    ("export.download", "report", 0.04),
)
_AUDIT_ACTION_NAMES = pa.array([action for action, _, _ in _AUDIT_ACTIONS])
_AUDIT_TARGET_PREFIXES = pa.array([f"{kind}:" for _, kind, _ in _AUDIT_ACTIONS])
_AUDIT_DETAILS = pa.array(
    [
        '{"via": "web"}',
        '{"via": "mobile"}',
        '{"via": "api", "client": "cli"}',
        '{"via": "web", "mfa": true}',
        '{"reason": "user_request"}',
        '{"reason": "policy"}',
    ]
)
_ACTOR_PREFIXES = pa.array(["user:", "admin:", "system:"])
_SYSTEM_ACTORS = pa.array(["scheduler", "billing-worker"])


def _audit_batches(plan: Plan) -> Iterator[pa.Table]:
    rng = plan.rng("audit_logs")
    counts = plan.minute_counts(rng, plan.audit, gap=False)
    for first_row, ts in minute_chunks(counts, plan.origin_us, rng):
        rows = len(ts)
        user_ids = skewed_user_ids(rng, rows, plan.users)
        # Mostly users acting on their own account; some admins, some automation.
        actor_kind = choice(rng, [0.85, 0.1, 0.05], rows)
        actor_prefix = pick(_ACTOR_PREFIXES, actor_kind)
        actor_id = np.where(actor_kind == 1, user_ids % 12 + 1, user_ids)
        actor_suffix = pc.cast(pa.array(actor_id), pa.string())
        system_names = pick(_SYSTEM_ACTORS, rng.integers(0, len(_SYSTEM_ACTORS), rows))
        actor_suffix = pc.if_else(pa.array(actor_kind == 2), system_names, actor_suffix)
        action = choice(rng, [weight for _, _, weight in _AUDIT_ACTIONS], rows)
        target_id = np.where(actor_kind == 0, user_ids, rng.integers(1, 2_000_000, rows))
        yield pa.table(
            {
                "id": ids(first_row, rows),
                "ts": timestamps(ts),
                "actor": pc.binary_join_element_wise(actor_prefix, actor_suffix, ""),
                "action": pick(_AUDIT_ACTION_NAMES, action),
                "target": pc.binary_join_element_wise(
                    pick(_AUDIT_TARGET_PREFIXES, action),
                    pc.cast(pa.array(target_id), pa.string()),
                    "",
                ),
                "ip": ips_for(rng, user_ids, actor_kind == 2),
                "detail": pick(_AUDIT_DETAILS, rng.integers(0, len(_AUDIT_DETAILS), rows)),
            }
        )


_JOB_KINDS = (  # queue, name, weight, median run time in seconds
    ("emails", "send_welcome_email", 0.08, 0.8),
    ("emails", "send_password_reset", 0.05, 0.7),
    ("emails", "send_receipt", 0.15, 0.9),
    ("emails", "send_weekly_digest", 0.04, 2.5),
    ("webhooks", "deliver_webhook", 0.25, 0.4),
    ("reports", "build_daily_report", 0.03, 25.0),
    ("reports", "export_csv", 0.06, 12.0),
    ("billing", "charge_invoice", 0.1, 2.0),
    ("billing", "sync_subscription", 0.06, 1.2),
    ("images", "resize_image", 0.12, 3.0),
    ("images", "generate_thumbnail", 0.06, 1.5),
)
_JOB_QUEUES = pa.array([queue for queue, _, _, _ in _JOB_KINDS])
_JOB_NAMES = pa.array([name for _, name, _, _ in _JOB_KINDS])
_JOB_RUN_US = np.array([seconds * 1e6 for _, _, _, seconds in _JOB_KINDS])
_JOB_ERRORS_BY_QUEUE = {
    "emails": "SMTP 421 4.7.0 service not available, try again later",
    "webhooks": "HTTP 503 from subscriber endpoint https://hooks.example.com/orders",
    "reports": "canceling statement due to statement timeout",
    "billing": "payment provider error: card_declined (insufficient_funds)",
    "images": "unsupported image format: image/heic",
}
_JOB_ERRORS = pa.array([_JOB_ERRORS_BY_QUEUE[queue] for queue, _, _, _ in _JOB_KINDS])
_WEBHOOKS = np.array([queue == "webhooks" for queue, _, _, _ in _JOB_KINDS])
_STATUS_NAMES = pa.array(list(JOB_STATUSES))
_WAITING, _ACTIVE, _COMPLETED, _FAILED, _DELAYED = range(len(JOB_STATUSES))
# Ordinary job failures are retried until they complete (attempts 2-3): the reference thresholds
# warn on any job that fails for good, so on an ordinary day none does. Failures come from the
# incidents (the failure streak, `hk demo incident`).
_JOB_FAILURE_RATE = 0.0
_ACTIVE_JOBS = 3
# A job that is running at ``now`` started at most this long ago (the stuck job aside).
_ACTIVE_WITHIN_US = 10 * MINUTE_US


def _job_batches(plan: Plan, observed: Observed) -> Iterator[pa.Table]:
    rng = plan.rng("jobs")
    counts = plan.minute_counts(rng, plan.jobs, gap=False)
    backlog = int(np.clip(plan.jobs // 500, 3, 30))
    first_backlog = plan.jobs - backlog
    first_active = first_backlog - _ACTIVE_JOBS
    # The stuck job is the last one created before stuck_job_start_us (or the first, if none is).
    stuck_minute = (plan.stuck_job_start_us - plan.origin_us) // MINUTE_US
    stuck_index = max(int(counts[: max(stuck_minute, 0)].sum()) - 1, 0)
    failure_streak = plan.windows[IncidentKind.JOB_FAILURE_STREAK]
    for first_row, created in minute_chunks(counts, plan.origin_us, rng):
        rows = len(created)
        index = np.arange(first_row, first_row + rows)
        kind = choice(rng, [weight for _, _, weight, _ in _JOB_KINDS], rows)
        started = created + (1.5e6 * np.exp(0.8 * rng.standard_normal(rows))).astype(np.int64)
        finished = started + (_JOB_RUN_US[kind] * np.exp(0.8 * rng.standard_normal(rows))).astype(
            np.int64
        )
        failed = (rng.random(rows) < _JOB_FAILURE_RATE) | (
            failure_streak.mask(created) & _WEBHOOKS[kind]
        )
        status = np.where(failed, _FAILED, _COMPLETED)
        attempts = np.where(
            failed,
            np.array([3, 4, 5])[choice(rng, [0.7, 0.2, 0.1], rows)],
            np.array([1, 2, 3])[choice(rng, [0.9, 0.08, 0.02], rows)],
        )
        # Jobs still running or not yet picked up at ``now``.
        status[finished > plan.now_us] = _ACTIVE
        status[started > plan.now_us] = _WAITING
        recent = started >= plan.now_us - _ACTIVE_WITHIN_US
        status[(index >= first_active) & (index < first_backlog) & recent] = _ACTIVE
        backlog_rows = index >= first_backlog
        status[backlog_rows] = np.where(rng.random(rows) < 0.67, _WAITING, _DELAYED)[backlog_rows]
        stuck = index == stuck_index
        if stuck.any():
            status[stuck] = _ACTIVE
            latest_created = plan.stuck_job_start_us - MINUTE_US
            created[stuck] = np.minimum(created[stuck], max(latest_created, plan.start_us))
            started[stuck] = created[stuck] + 2_000_000
            observed.stuck_job_started_us = int(started[stuck][0])

        not_started = (status == _WAITING) | (status == _DELAYED)
        attempts[not_started] = 0
        attempts[status == _ACTIVE] = np.maximum(attempts[status == _ACTIVE], 1)
        unfinished = not_started | (status == _ACTIVE)
        yield pa.table(
            {
                "id": ids(first_row, rows),
                "queue": pick(_JOB_QUEUES, kind),
                "name": pick(_JOB_NAMES, kind),
                "status": pick(_STATUS_NAMES, status),
                "created_at": timestamps(created),
                "started_at": timestamps(started, not_started),
                "finished_at": timestamps(finished, unfinished),
                "attempts": pa.array(attempts.astype(np.int32)),
                "error": _JOB_ERRORS.take(pa.array(kind, mask=status != _FAILED)),
            }
        )


_API_CALLS = (  # service, endpoint, weight, median ms, median tokens (0: not an LLM), cost per unit
    ("openai", "/v1/chat/completions", 0.30, 1400.0, 900, 2e-6),
    ("openai", "/v1/embeddings", 0.15, 180.0, 250, 1e-7),
    ("stripe", "/v1/payment_intents", 0.12, 350.0, 0, 0.0),
    ("stripe", "/v1/customers", 0.05, 220.0, 0, 0.0),
    ("sendgrid", "/v3/mail/send", 0.23, 140.0, 0, 0.0006),
    ("twilio", "/2010-04-01/Accounts/:sid/Messages.json", 0.15, 260.0, 0, 0.0079),
)
_API_SERVICES = pa.array([service for service, *_ in _API_CALLS])
_API_ENDPOINTS = pa.array([endpoint for _, endpoint, *_ in _API_CALLS])
_API_MEDIAN_MS = np.array([call[3] for call in _API_CALLS])
_API_MEDIAN_TOKENS = np.array([call[4] for call in _API_CALLS], dtype=np.float64)
_API_UNIT_COST = np.array([call[5] for call in _API_CALLS])
_API_FAILURE_RATE = np.array([0.04 if call[0] == "openai" else 0.015 for call in _API_CALLS])


def _api_usage_batches(plan: Plan) -> Iterator[pa.Table]:
    rng = plan.rng("api_usage")
    counts = plan.minute_counts(rng, plan.api_usage, gap=False)
    for first_row, ts in minute_chunks(counts, plan.origin_us, rng):
        rows = len(ts)
        call = choice(rng, [weight for _, _, weight, *_ in _API_CALLS], rows)
        success = rng.random(rows) >= _API_FAILURE_RATE[call]
        is_llm = _API_MEDIAN_TOKENS[call] > 0
        tokens = np.maximum(
            (_API_MEDIAN_TOKENS[call] * np.exp(0.7 * rng.standard_normal(rows))).astype(np.int64), 1
        )
        no_tokens = ~is_llm | ~success
        # LLM calls cost per token, the others per call; failed calls are not billed.
        cost = np.where(is_llm, tokens * _API_UNIT_COST[call], _API_UNIT_COST[call])
        cost = np.where(success, np.round(cost, 6), 0.0)
        latency = _API_MEDIAN_MS[call] * np.exp(0.5 * rng.standard_normal(rows))
        anonymous = rng.random(rows) < 0.2
        yield pa.table(
            {
                "id": ids(first_row, rows),
                "ts": timestamps(ts),
                "service_name": pick(_API_SERVICES, call),
                "endpoint": pick(_API_ENDPOINTS, call),
                "user_id": pa.array(skewed_user_ids(rng, rows, plan.users), mask=anonymous),
                "response_time_ms": pa.array(np.round(latency, 3)),
                "tokens_used": pa.array(tokens.astype(np.int32), mask=no_tokens),
                "cost_usd": pa.array(cost),
                "success": pa.array(success),
            }
        )


# --- live traffic -------------------------------------------------------------------------------
# The kinds `hk demo incident` injects into the live traffic (housekeeping/demo/live.py).
LIVE_INCIDENT_KINDS = ("error-burst", "slow", "outage", "stuck-job")
# Share of the requests an error burst turns into 5xx (all routes, or the one route given).
_LIVE_ERROR_SHARE = 0.3
_NO_ERRORS = pa.table(
    {
        "request_id": pa.array([], pa.string()),
        "ts": pa.array([], pa.timestamp("us")),
        "route": pa.array([], pa.string()),
        "error_name": pa.array([], pa.string()),
        "message": pa.array([], pa.string()),
        "stack": pa.array([], pa.string()),
    }
)


def live_rows(
    rng: np.random.Generator,
    start_us: int,
    end_us: int,
    requests_per_minute: float,
    incidents: Sequence[tuple[str, str | None, int, int]] = (),
    users: int = 10_000,
) -> dict[str, pa.Table]:
    """The rows an application writes between ``start_us`` and ``end_us`` (µs), by table.

    About ``requests_per_minute`` request logs a minute (Poisson), with the error logs of their
    5xx, finished jobs (one per 20 requests, none failing) and revoked tokens (one per 10). Ids
    are left to the database. ``incidents`` are ``(kind, route or None, start_us, end_us)`` of
    LIVE_INCIDENT_KINDS: an error burst turns 30 % of the requests (of ``route``, or all) into
    5xx whose error logs all name the burst's one cause (``DatabaseError``), a slow period
    makes them take about 1.8 s, an outage answers all of them 503; a stuck job is written by
    the caller (live.py), not here.
    """
    minutes = max(end_us - start_us, 0) / MINUTE_US
    rows = int(rng.poisson(requests_per_minute * minutes)) if minutes else 0
    ts = np.sort(rng.integers(start_us, max(end_us, start_us + 1), rows))
    endpoint = choice(rng, _ENDPOINT_WEIGHTS, rows)
    health = endpoint == _HEALTH
    status = _ordinary_status(rng, endpoint)
    duration = _MEDIAN_MS[endpoint] * np.exp(0.65 * rng.standard_normal(rows))
    # An error burst has one cause: its 5xx log the burst's own error, not a mix of names.
    burst = np.zeros(rows, dtype=bool)
    for kind, route, first_us, last_us in incidents:
        hit = (ts >= first_us) & (ts < last_us) & ~health
        if route is not None:
            # A route served by several methods (GET and POST /api/v1/orders): all of them.
            hit &= np.isin(
                endpoint, [i for i, (_, path, _) in enumerate(_ENDPOINTS) if path == route]
            )
        if kind == "error-burst":
            hit &= rng.random(rows) < _LIVE_ERROR_SHARE
            status[hit] = _BURST_STATUS_CODES[choice(rng, _BURST_STATUS_WEIGHTS, int(hit.sum()))]
            burst |= hit
        elif kind == "slow":
            duration[hit] = _SLOW_MEDIAN_MS * np.exp(0.6 * rng.standard_normal(int(hit.sum())))
        elif kind == "outage":
            status[hit] = 503
    requests, errors = _request_tables(rng, ts, endpoint, status, duration, users, burst=burst)
    tables = {
        "request_logs": requests,
        "error_logs": errors if errors is not None else _NO_ERRORS,
    }
    jobs = int(rng.poisson(requests_per_minute / 20 * minutes)) if minutes else 0
    created = np.sort(rng.integers(start_us, max(end_us, start_us + 1), jobs))
    kind = choice(rng, [weight for _, _, weight, _ in _JOB_KINDS], jobs)
    started = created + (1.5e6 * np.exp(0.8 * rng.standard_normal(jobs))).astype(np.int64)
    run_us = (_JOB_RUN_US[kind] * np.exp(0.8 * rng.standard_normal(jobs))).astype(np.int64)
    finished = np.minimum(started + run_us, end_us)
    started = np.minimum(started, finished)
    tables["jobs"] = pa.table(
        {
            "queue": pick(_JOB_QUEUES, kind),
            "name": pick(_JOB_NAMES, kind),
            "status": pa.array(["completed"] * jobs, pa.string()),
            "created_at": timestamps(np.minimum(created, started)),
            "started_at": timestamps(started),
            "finished_at": timestamps(finished),
            "attempts": pa.array(
                np.array([1, 2])[choice(rng, [0.95, 0.05], jobs)].astype(np.int32)
            ),
            "error": pa.nulls(jobs, pa.string()),
        }
    )
    tokens = int(rng.poisson(requests_per_minute / 10 * minutes)) if minutes else 0
    revoked = np.sort(rng.integers(start_us, max(end_us, start_us + 1), tokens))
    lifetimes = np.array([lifetime for lifetime, _ in _TOKEN_LIFETIMES_US], dtype=np.int64)
    lifetime = lifetimes[choice(rng, [weight for _, weight in _TOKEN_LIFETIMES_US], tokens)]
    tables["revoked_tokens"] = pa.table(
        {
            "user_id": pa.array(skewed_user_ids(rng, tokens, users)),
            "token_hash": sha256_hex(rng, tokens),
            "revoked_at": timestamps(revoked),
            "expires_at": timestamps(
                revoked + ((1.0 - rng.random(tokens)) * lifetime).astype(np.int64)
            ),
        }
    )
    return tables


def live_routes() -> tuple[str, ...]:
    """The routes the demo's traffic uses, most requested first, each once (a route served by
    several methods is one route, as the rollups group it)."""
    return tuple(dict.fromkeys(route for _, route, _ in _ENDPOINTS))

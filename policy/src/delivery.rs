//! What happens to queued items after a delivery attempt: the rules the host's delivery workers
//! and the mock host's `deliver` both follow.
//!
//! A tag's `deliver` answers per item (delivered, retry, rejected) or for the whole batch
//! (retry it all, or reject it for a bad item the vendor does not name). [`plan`] turns that
//! answer into what the host does next; [`Backoff`] says when a retry happens;
//! [`plain_result`] classifies the answer to a plain request queued with `send-later`, as HTTP
//! delivery systems agree (Segment, Vector: retry connection failures, 408, 429 and 5xx but 501
//! and 505; drop other 4xx). Keeping them here means an author's mock test of "Meta rejects the
//! batch" isolates the bad event exactly as production does.

use std::time::{Duration, SystemTime};

/// Most items one invocation may queue (`enqueue` and `send-later` together): one event
/// usually makes one item; a template looping over `enqueue` is cut off here.
pub const MAX_QUEUED_PER_INVOCATION: usize = 16;

/// The longest `Retry-After` honoured; a vendor asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a request, response, event or consent call (`what`) is refused in `deliver`.
pub fn not_in_deliver(what: &str) -> String {
    format!("{what} is not available in deliver (it runs outside any request): read it in fire and put it in the item")
}

/// Why `enqueue` or `send-later` is refused in `deliver`.
pub const NO_QUEUEING_IN_DELIVER: &str = "deliver cannot queue items: answer retry for the ones to try again";

/// Why `enqueue` is refused to a template without a declared batch.
pub const NO_DELIVER_PHASE: &str = "enqueue needs a deliver phase: declare Delivery::batched(..) in the manifest, or use send-later";

/// Why `send-later` is refused to a template without an outbound grant.
pub const NO_OUTBOX: &str = "this template has no outbox: send-later needs an outbound grant, enqueue a declared batch (Delivery::batched)";

/// Longest item id, in bytes: ids are event ids (a UUID, an order number, 32 hex digits).
pub const MAX_ID_BYTES: usize = 256;

/// Checks an item's id and the invocation's count before it is queued.
pub fn check_queueing(id: &str, queued_so_far: usize) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!("an item id is the event id, 1 to {MAX_ID_BYTES} bytes (got {})", id.len()));
    }
    if queued_so_far >= MAX_QUEUED_PER_INVOCATION {
        return Err(format!("at most {MAX_QUEUED_PER_INVOCATION} items may be queued per invocation"));
    }
    Ok(())
}

/// Checks an item for a tag's `deliver`: JSON, within the batch's byte limit.
pub fn check_item(item: &str, max_bytes: u32) -> Result<(), String> {
    if item.len() > max_bytes as usize {
        return Err(format!("item of {} bytes is larger than this tag's batch max_bytes ({max_bytes}): the vendor could never take it", item.len()));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(item).map(|_| ()).map_err(|e| format!("the item is not JSON: {e}"))
}

pub use sluice_manifest::{BatchFailure, ItemResult};

/// What to do with a batch after `deliver` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One result per item, in batch order.
    PerItem(Vec<ItemResult>),
    /// Deliver the first `n` items and the rest as two batches, again at once: halving until
    /// the bad item stands alone costs about 2·log2(n) extra requests for one bad item.
    Split(usize),
    /// Retry every item, after at least this many milliseconds if given; the tag pauses until
    /// then (a `429` or an outage is the vendor's, not one item's).
    RetryAll(Option<u32>),
}

/// How often one item may make `deliver` fail without answering (a trap, a CPU or memory
/// limit) before it is dead-lettered: the cause may be the machine (a CPU budget spent while
/// the host was starved), so an item alone gets a few tries, not one.
pub const TRAPS_BEFORE_DEAD: u32 = 3;

/// The next step for a batch of `len` items, given `deliver`'s answer; `attempts` is the
/// earlier attempts of a batch's only item. A template bug — the wrong number of results, or a
/// trap (`Err(None)`) — is treated like a whole-batch rejection: split down to the item that
/// causes it, which is then dead-lettered with the reason (after [`TRAPS_BEFORE_DEAD`] traps),
/// so one poison item never blocks the queue.
pub fn plan(len: usize, attempts: u32, answer: Result<Vec<ItemResult>, Option<BatchFailure>>, why_broken: impl FnOnce() -> String) -> Plan {
    let reject = |reason: String| {
        if len > 1 { Plan::Split(len / 2) } else { Plan::PerItem(vec![ItemResult::Rejected(reason)]) }
    };
    match answer {
        Ok(results) if results.len() == len => Plan::PerItem(results),
        Ok(results) => reject(format!("deliver returned {} results for {len} items (a template bug)", results.len())),
        Err(Some(BatchFailure::Retry(after))) => Plan::RetryAll(after),
        Err(Some(BatchFailure::Reject(reason))) => reject(reason),
        Err(None) if len == 1 && attempts + 1 < TRAPS_BEFORE_DEAD => Plan::PerItem(vec![ItemResult::Retry(None)]),
        Err(None) => reject(why_broken()),
    }
}

/// The result of one attempt at a plain queued request: `status` is `None` when no answer came
/// (connection refused, timeout); `retry_after` in milliseconds.
pub fn plain_result(status: Option<u16>, retry_after: Option<u32>) -> ItemResult {
    match status {
        None => ItemResult::Retry(None),
        Some(s) if (200..300).contains(&s) => ItemResult::Delivered,
        Some(408 | 429) => ItemResult::Retry(retry_after),
        Some(s @ 500..=599) if s != 501 && s != 505 => ItemResult::Retry(retry_after),
        Some(s) => ItemResult::Rejected(format!("HTTP {s}: the vendor refused the request; it will not be retried")),
    }
}

/// A `Retry-After` header's value (seconds, or an HTTP date) as a wait from `now` in
/// milliseconds, at most [`MAX_RETRY_AFTER`].
pub fn retry_after(value: &str, now: SystemTime) -> Option<u32> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER).as_millis() as u32)
}

/// Exponential backoff with jitter: attempt `n` (0-based) waits between half and all of
/// `base·2ⁿ`, capped at `max`. The jitter spreads the retries of many items that failed
/// together (one outage), so the vendor's recovery is not met by a synchronised storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First retry's wait (before jitter).
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry `attempt` (0 for the first retry); `unit` is a uniform random
    /// number in `[0, 1)`. A vendor's `Retry-After` (`at_least_ms`) wins when it asks for longer.
    pub fn delay(&self, attempt: u32, unit: f64, at_least_ms: Option<u32>) -> Duration {
        let full = self.base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX)).min(self.max);
        let jittered = full / 2 + full.mul_f64(unit.clamp(0.0, 1.0) / 2.0);
        at_least_ms.map_or(jittered, |floor| jittered.max(Duration::from_millis(u64::from(floor))))
    }
}

/// Whether an item queued at `created_ms` is past the tag's `max_age_secs` at `now_ms`.
pub fn expired(created_ms: u64, now_ms: u64, max_age_secs: u32) -> bool {
    now_ms.saturating_sub(created_ms) > u64::from(max_age_secs) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> String {
        unreachable!("only for traps")
    }

    #[test]
    fn a_whole_batch_rejection_splits_until_the_bad_item_stands_alone() {
        let reject = || Err(Some(BatchFailure::Reject("bad event".into())));
        assert_eq!(plan(1000, 0, reject(), never), Plan::Split(500));
        assert_eq!(plan(3, 0, reject(), never), Plan::Split(1));
        assert_eq!(plan(1, 0, reject(), never), Plan::PerItem(vec![ItemResult::Rejected("bad event".into())]));
    }

    #[test]
    fn template_bugs_are_isolated_like_bad_items() {
        assert_eq!(plan(4, 0, Ok(vec![ItemResult::Delivered]), never), Plan::Split(2));
        match plan(1, 0, Ok(vec![]), never) {
            Plan::PerItem(r) => assert!(matches!(&r[0], ItemResult::Rejected(m) if m.contains("0 results for 1")), "{r:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(plan(4, 0, Err(None), || "trapped".into()), Plan::Split(2), "a trap on a batch: split");
        assert_eq!(plan(1, 0, Err(None), never), Plan::PerItem(vec![ItemResult::Retry(None)]), "alone, it may be the machine");
        assert_eq!(plan(1, 1, Err(None), never), Plan::PerItem(vec![ItemResult::Retry(None)]));
        assert_eq!(plan(1, 2, Err(None), || "trapped".into()), Plan::PerItem(vec![ItemResult::Rejected("trapped".into())]));
        assert_eq!(plan(2, 0, Err(Some(BatchFailure::Retry(None))), never), Plan::RetryAll(None));
    }

    #[test]
    fn plain_requests_retry_what_is_transient_and_drop_what_is_not() {
        let after = Some(7_000);
        assert_eq!(plain_result(Some(204), None), ItemResult::Delivered);
        assert_eq!(plain_result(None, None), ItemResult::Retry(None));
        assert_eq!(plain_result(Some(429), after), ItemResult::Retry(after));
        assert_eq!(plain_result(Some(503), after), ItemResult::Retry(after));
        assert_eq!(plain_result(Some(408), None), ItemResult::Retry(None));
        for permanent in [400, 401, 404, 501, 505] {
            assert!(matches!(plain_result(Some(permanent), None), ItemResult::Rejected(_)), "{permanent}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(" 30 ", now), Some(30_000));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(retry_after(&date, now), Some(90_000));
        assert_eq!(retry_after(&httpdate::fmt_http_date(now - Duration::from_secs(5)), now), Some(0));
        assert_eq!(retry_after("999999", now), Some(MAX_RETRY_AFTER.as_millis() as u32));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap_and_yields_to_retry_after() {
        let b = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) };
        assert_eq!(b.delay(0, 0.0, None), Duration::from_millis(500));
        assert_eq!(b.delay(0, 0.999_999, None).as_millis(), 999);
        assert_eq!(b.delay(3, 0.0, None), Duration::from_secs(4));
        assert_eq!(b.delay(40, 0.0, None), Duration::from_secs(30), "capped, and no overflow at large attempts");
        assert_eq!(b.delay(0, 0.5, Some(20_000)), Duration::from_secs(20));
    }

    #[test]
    fn items_expire_after_the_vendors_window() {
        assert!(!expired(0, 7 * 86_400_000, 7 * 86_400));
        assert!(expired(0, 7 * 86_400_000 + 1, 7 * 86_400));
        assert!(!expired(10, 0, 1), "a clock step backwards does not expire anything");
    }
}

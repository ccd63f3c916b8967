//! The dial queue on SQL: claims with leases, attempts, their ends, lease renewal and expiry.

use crate::store::campaign::{Attempt, AttemptEnd, Claim, ClaimRequest, Contact};
use crate::store::{Result, StoreError};

use super::SqlStore;

pub(super) async fn claim_contacts(s: &SqlStore, req: &ClaimRequest) -> Result<Claim> {
    let _ = (s, req);
    Err(StoreError::Database(
        "claim_contacts: not built yet".to_owned(),
    ))
}

pub(super) async fn abandon_attempt(
    s: &SqlStore,
    contact_id: &str,
    attempt: u32,
    next_attempt_at_us: i64,
    reason_code: &str,
    reason: &str,
    at_us: i64,
) -> Result<()> {
    let _ = (
        s,
        contact_id,
        attempt,
        next_attempt_at_us,
        reason_code,
        reason,
        at_us,
    );
    Err(StoreError::Database(
        "abandon_attempt: not built yet".to_owned(),
    ))
}

pub(super) async fn set_attempt_call(
    s: &SqlStore,
    contact_id: &str,
    attempt: u32,
    call_id: &str,
    trunk_id: Option<&str>,
) -> Result<()> {
    let _ = (s, contact_id, attempt, call_id, trunk_id);
    Err(StoreError::Database(
        "set_attempt_call: not built yet".to_owned(),
    ))
}

pub(super) async fn end_attempt(s: &SqlStore, end: &AttemptEnd) -> Result<bool> {
    let _ = (s, end);
    Err(StoreError::Database(
        "end_attempt: not built yet".to_owned(),
    ))
}

pub(super) async fn renew_leases(
    s: &SqlStore,
    node: &str,
    contact_ids: &[String],
    until_us: i64,
) -> Result<()> {
    let _ = (s, node, contact_ids, until_us);
    Err(StoreError::Database(
        "renew_leases: not built yet".to_owned(),
    ))
}

pub(super) async fn expired_leases(
    s: &SqlStore,
    now_us: i64,
    limit: u32,
) -> Result<Vec<(Contact, Attempt)>> {
    let _ = (s, now_us, limit);
    Err(StoreError::Database(
        "expired_leases: not built yet".to_owned(),
    ))
}

pub(super) async fn attempt_by_call(
    s: &SqlStore,
    call_id: &str,
) -> Result<Option<(Contact, Attempt)>> {
    let _ = (s, call_id);
    Err(StoreError::Database(
        "attempt_by_call: not built yet".to_owned(),
    ))
}

//! Campaigns, contacts, results, the suppression list and tenant limits on SQL (the
//! [`CampaignStore`](crate::store::campaign::CampaignStore) methods other than the dial queue's).

use crate::campaign::model::{CampaignSettings, CampaignStatus, ContactStatus};
use crate::store::campaign::{
    Attempt, Campaign, CampaignCounts, Contact, Inserted, NewCampaign, NewContact, ResultRow,
    Suppression, TenantLimits,
};
use crate::store::{Page, Result, StoreError};

use super::SqlStore;

pub(super) async fn create_campaign(s: &SqlStore, c: &NewCampaign) -> Result<Campaign> {
    let _ = (s, c);
    Err(StoreError::Database(
        "create_campaign: not built yet".to_owned(),
    ))
}

pub(super) async fn get_campaign(s: &SqlStore, tenant: &str, id: &str) -> Result<Campaign> {
    let _ = (s, tenant, id);
    Err(StoreError::Database(
        "get_campaign: not built yet".to_owned(),
    ))
}

pub(super) async fn get_campaign_any_tenant(s: &SqlStore, id: &str) -> Result<Campaign> {
    let _ = (s, id);
    Err(StoreError::Database(
        "get_campaign_any_tenant: not built yet".to_owned(),
    ))
}

pub(super) async fn list_campaigns(
    s: &SqlStore,
    tenant: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Campaign>> {
    let _ = (s, tenant, cursor, limit);
    Err(StoreError::Database(
        "list_campaigns: not built yet".to_owned(),
    ))
}

pub(super) async fn campaigns_in(
    s: &SqlStore,
    statuses: &[CampaignStatus],
) -> Result<Vec<Campaign>> {
    let _ = (s, statuses);
    Err(StoreError::Database(
        "campaigns_in: not built yet".to_owned(),
    ))
}

pub(super) async fn update_campaign(
    s: &SqlStore,
    tenant: &str,
    id: &str,
    settings: &CampaignSettings,
    script_version: Option<i64>,
    at_us: i64,
) -> Result<Campaign> {
    let _ = (s, tenant, id, settings, script_version, at_us);
    Err(StoreError::Database(
        "update_campaign: not built yet".to_owned(),
    ))
}

pub(super) async fn delete_campaign(s: &SqlStore, tenant: &str, id: &str) -> Result<()> {
    let _ = (s, tenant, id);
    Err(StoreError::Database(
        "delete_campaign: not built yet".to_owned(),
    ))
}

pub(super) async fn set_campaign_status(
    s: &SqlStore,
    tenant: &str,
    id: &str,
    from: &[CampaignStatus],
    to: CampaignStatus,
    at_us: i64,
) -> Result<Campaign> {
    let _ = (s, tenant, id, from, to, at_us);
    Err(StoreError::Database(
        "set_campaign_status: not built yet".to_owned(),
    ))
}

pub(super) async fn insert_contacts(
    s: &SqlStore,
    tenant: &str,
    campaign_id: &str,
    contacts: &[NewContact],
    at_us: i64,
) -> Result<Vec<Inserted>> {
    let _ = (s, tenant, campaign_id, contacts, at_us);
    Err(StoreError::Database(
        "insert_contacts: not built yet".to_owned(),
    ))
}

pub(super) async fn list_contacts(
    s: &SqlStore,
    campaign_id: &str,
    status: Option<ContactStatus>,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Contact>> {
    let _ = (s, campaign_id, status, cursor, limit);
    Err(StoreError::Database(
        "list_contacts: not built yet".to_owned(),
    ))
}

pub(super) async fn get_contact(
    s: &SqlStore,
    campaign_id: &str,
    id: &str,
) -> Result<(Contact, Vec<Attempt>)> {
    let _ = (s, campaign_id, id);
    Err(StoreError::Database(
        "get_contact: not built yet".to_owned(),
    ))
}

pub(super) async fn due_contacts(
    s: &SqlStore,
    campaign_id: &str,
    until_us: i64,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Contact>> {
    let _ = (s, campaign_id, until_us, after, limit);
    Err(StoreError::Database(
        "due_contacts: not built yet".to_owned(),
    ))
}

pub(super) async fn campaign_counts(
    s: &SqlStore,
    campaign_id: &str,
    now_us: i64,
) -> Result<CampaignCounts> {
    let _ = (s, campaign_id, now_us);
    Err(StoreError::Database(
        "campaign_counts: not built yet".to_owned(),
    ))
}

pub(super) async fn campaign_results(
    s: &SqlStore,
    campaign_id: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<ResultRow>> {
    let _ = (s, campaign_id, cursor, limit);
    Err(StoreError::Database(
        "campaign_results: not built yet".to_owned(),
    ))
}

pub(super) async fn list_suppressions(
    s: &SqlStore,
    tenant: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Suppression>> {
    let _ = (s, tenant, cursor, limit);
    Err(StoreError::Database(
        "list_suppressions: not built yet".to_owned(),
    ))
}

pub(super) async fn delete_suppression(s: &SqlStore, tenant: &str, number: &str) -> Result<()> {
    let _ = (s, tenant, number);
    Err(StoreError::Database(
        "delete_suppression: not built yet".to_owned(),
    ))
}

pub(super) async fn suppressed_among(
    s: &SqlStore,
    tenant: &str,
    numbers: &[String],
) -> Result<Vec<String>> {
    let _ = (s, tenant, numbers);
    Err(StoreError::Database(
        "suppressed_among: not built yet".to_owned(),
    ))
}

pub(super) async fn tenant_limits(s: &SqlStore, tenant: &str) -> Result<TenantLimits> {
    let _ = (s, tenant);
    Err(StoreError::Database(
        "tenant_limits: not built yet".to_owned(),
    ))
}

pub(super) async fn set_tenant_limits(
    s: &SqlStore,
    tenant: &str,
    limits: &TenantLimits,
    at_us: i64,
) -> Result<TenantLimits> {
    let _ = (s, tenant, limits, at_us);
    Err(StoreError::Database(
        "set_tenant_limits: not built yet".to_owned(),
    ))
}

pub(super) async fn defer_contacts(
    s: &SqlStore,
    deferrals: &[(String, i64, String, String)],
    at_us: i64,
) -> Result<()> {
    let _ = (s, deferrals, at_us);
    Err(StoreError::Database(
        "defer_contacts: not built yet".to_owned(),
    ))
}

pub(super) async fn suppress(
    s: &SqlStore,
    tenant: &str,
    entries: &[(String, Option<String>)],
    source: &str,
    at_us: i64,
) -> Result<i64> {
    let _ = (s, tenant, entries, source, at_us);
    Err(StoreError::Database("suppress: not built yet".to_owned()))
}

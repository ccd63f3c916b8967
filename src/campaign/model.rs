//! The campaign vocabulary shared by the API, the store and the worker.
//!
//! [`CampaignSettings`] is what a client writes (`POST /v1/campaigns`, `PATCH`); the store keeps
//! it as one JSON column beside the columns it queries (status, limits, priority). Contact and
//! campaign states are closed enums with stable snake_case names (the API's and the database's).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a campaign stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Created, not started: editable.
    Draft,
    /// Started with a `start_at` in the future: the worker starts it then.
    Scheduled,
    /// The worker dials its contacts.
    Running,
    /// Paused: no new calls; live calls go on.
    Paused,
    /// Every contact reached a final state (or `end_at` passed).
    Completed,
    /// Cancelled: no new calls; with `hangup`, live calls ended too.
    Cancelled,
}

impl CampaignStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CampaignStatus; 6] = [
        CampaignStatus::Draft,
        CampaignStatus::Scheduled,
        CampaignStatus::Running,
        CampaignStatus::Paused,
        CampaignStatus::Completed,
        CampaignStatus::Cancelled,
    ];

    /// The stable name (API and database).
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Scheduled => "scheduled",
            CampaignStatus::Running => "running",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Completed => "completed",
            CampaignStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<CampaignStatus> {
        CampaignStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether nothing more will happen (completed or cancelled).
    pub fn is_final(self) -> bool {
        matches!(self, CampaignStatus::Completed | CampaignStatus::Cancelled)
    }
}

impl fmt::Display for CampaignStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a contact stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactStatus {
    /// Waiting for its `next_attempt_at` (a retry, or a calling window that is closed now:
    /// `reason` says which and until when).
    Queued,
    /// Leased by a node: being dialed or on a call.
    Dialing,
    /// Final: answered.
    Completed,
    /// Final: an outcome that is never retried (rejected, invalid number...).
    Failed,
    /// Final: on the tenant's do-not-call list.
    Suppressed,
    /// Final: its outcome's retries (or the campaign's end) ran out.
    Exhausted,
}

impl ContactStatus {
    /// Every status.
    pub const ALL: [ContactStatus; 6] = [
        ContactStatus::Queued,
        ContactStatus::Dialing,
        ContactStatus::Completed,
        ContactStatus::Failed,
        ContactStatus::Suppressed,
        ContactStatus::Exhausted,
    ];

    /// The stable name (API and database).
    pub fn as_str(self) -> &'static str {
        match self {
            ContactStatus::Queued => "queued",
            ContactStatus::Dialing => "dialing",
            ContactStatus::Completed => "completed",
            ContactStatus::Failed => "failed",
            ContactStatus::Suppressed => "suppressed",
            ContactStatus::Exhausted => "exhausted",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<ContactStatus> {
        ContactStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the contact is done (completed, failed, suppressed, exhausted).
    pub fn is_final(self) -> bool {
        !matches!(self, ContactStatus::Queued | ContactStatus::Dialing)
    }
}

impl fmt::Display for ContactStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A day of the week, as calling windows name it (`"mon"` … `"sun"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Day {
    /// Monday to Sunday.
    pub const ALL: [Day; 7] = [
        Day::Mon,
        Day::Tue,
        Day::Wed,
        Day::Thu,
        Day::Fri,
        Day::Sat,
        Day::Sun,
    ];

    /// This day from jiff's weekday.
    pub fn from_jiff(w: jiff::civil::Weekday) -> Day {
        use jiff::civil::Weekday as W;
        match w {
            W::Monday => Day::Mon,
            W::Tuesday => Day::Tue,
            W::Wednesday => Day::Wed,
            W::Thursday => Day::Thu,
            W::Friday => Day::Fri,
            W::Saturday => Day::Sat,
            W::Sunday => Day::Sun,
        }
    }
}

/// A span of local time in one day, written `"HH:MM-HH:MM"`. `end` may be `24:00`; an `end`
/// before `start` (`"22:00-02:00"`) runs past midnight into the next day. Minutes since
/// midnight; `start == end` is refused (say `"00:00-24:00"` for a whole day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// Minutes after local midnight the window opens (0..1440).
    pub start_min: u16,
    /// Minutes after local midnight it closes (1..=1440); below `start_min`: the next day.
    pub end_min: u16,
}

impl Span {
    /// Parses `"HH:MM-HH:MM"`.
    pub fn parse(text: &str) -> Result<Span, String> {
        let bad = || format!("{text:?} is not a span \"HH:MM-HH:MM\" (e.g. \"08:00-21:00\")");
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let h: u16 = h.parse().ok()?;
            let m: u16 = m.parse().ok()?;
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let start_min = minutes(a).ok_or_else(bad)?;
        let end_min = minutes(b).ok_or_else(bad)?;
        if start_min == 1440 {
            return Err(format!("{text:?}: a window cannot open at 24:00"));
        }
        if start_min == end_min {
            return Err(format!(
                "{text:?}: opens and closes at the same time (\"00:00-24:00\" is a whole day)"
            ));
        }
        if end_min == 0 {
            // "22:00-00:00" means until midnight.
            return Ok(Span {
                start_min,
                end_min: 1440,
            });
        }
        Ok(Span { start_min, end_min })
    }

    /// Whether it runs past midnight.
    pub fn crosses_midnight(self) -> bool {
        self.end_min < self.start_min
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start_min), hm(self.end_min))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Calling windows: per weekday, the spans of callee-local time calls may start in. A day
/// that is absent has none. [`Windows::default`] is 08:00–21:00 Monday to Saturday.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Windows(pub BTreeMap<Day, Vec<Span>>);

impl Default for Windows {
    fn default() -> Windows {
        let day = Span {
            start_min: 8 * 60,
            end_min: 21 * 60,
        };
        Windows(
            Day::ALL
                .into_iter()
                .filter(|d| *d != Day::Sun)
                .map(|d| (d, vec![day]))
                .collect(),
        )
    }
}

/// What one outcome leads to ([`RetryPolicy::rules`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    /// How many further attempts this outcome may cause (0: never retried).
    pub max_retries: u32,
    /// Seconds before the first retry; each further one waits `backoff` times longer.
    #[serde(default)]
    pub after_s: u64,
    /// Try the campaign's next trunk at once first (network errors): only when all trunks
    /// failed does the contact wait `after_s`.
    #[serde(default)]
    pub next_trunk: bool,
}

/// Retries by outcome. Outcomes are the engine's names (`busy`, `no_answer`, `rejected`,
/// `invalid_number`, `network_error`, `cancelled`, `failed`); `answered` ends the contact as
/// `completed` and is never retried. An outcome without a rule is not retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Outcome name → rule.
    #[serde(default = "default_rules")]
    pub rules: BTreeMap<String, RetryRule>,
    /// Each further retry of one outcome waits this many times longer (1.0: fixed). Default 2.
    #[serde(default = "default_backoff")]
    pub backoff: f64,
    /// Random spread of each wait, as a fraction (0.2: ±20 %). Default 0.2.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Longest wait, seconds. Default 86400.
    #[serde(default = "default_max_delay")]
    pub max_delay_s: u64,
}

fn default_rules() -> BTreeMap<String, RetryRule> {
    let rule = |max_retries, after_s, next_trunk| RetryRule {
        max_retries,
        after_s,
        next_trunk,
    };
    BTreeMap::from([
        ("busy".to_owned(), rule(3, 600, false)),
        ("no_answer".to_owned(), rule(3, 1800, false)),
        ("rejected".to_owned(), rule(0, 0, false)),
        ("invalid_number".to_owned(), rule(0, 0, false)),
        ("network_error".to_owned(), rule(3, 300, true)),
    ])
}
fn default_backoff() -> f64 {
    2.0
}
fn default_jitter() -> f64 {
    0.2
}
fn default_max_delay() -> u64 {
    86_400
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            rules: default_rules(),
            backoff: default_backoff(),
            jitter: default_jitter(),
            max_delay_s: default_max_delay(),
        }
    }
}

/// A campaign's settings: what `POST /v1/campaigns` takes (every field but `name` has a
/// default) and `PATCH` replaces field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSettings {
    /// A label.
    pub name: String,
    /// The script each call runs (its version is pinned when the campaign is created or the
    /// script id changes). None: calls are answered and hung up at once.
    #[serde(default)]
    pub script_id: Option<String>,
    /// Trunks in order: a network error moves the contact to the next one.
    #[serde(default)]
    pub trunk_ids: Vec<String>,
    /// Caller ids (the From user), used in turn; empty: the trunk's `from_user`.
    #[serde(default)]
    pub caller_ids: Vec<String>,
    /// Live calls at most. Default 10.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// New calls per second at most. Default 1.
    #[serde(default = "default_max_cps")]
    pub max_cps: f64,
    /// Seconds a call may ring. Default 30.
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_s: u32,
    /// Calling windows in the callee's local time. None: 08:00–21:00 Monday to Saturday.
    #[serde(default)]
    pub windows: Option<Windows>,
    /// Days without calls (`YYYY-MM-DD`, the callee's local date).
    #[serde(default)]
    pub holidays: Vec<jiff::civil::Date>,
    /// The zone of a contact whose number names none (IANA, e.g. `Europe/Paris`). Default UTC.
    #[serde(default = "default_timezone")]
    pub default_timezone: String,
    /// The region that numbers without a `+` are read in (ISO 3166 alpha-2). Default `US`.
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Retries by outcome.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Weight of this campaign's share among the tenant's running campaigns (1..=1000).
    /// Default 1.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// No call before (Unix µs; the API takes RFC 3339).
    #[serde(default)]
    pub start_at_us: Option<i64>,
    /// No call after; the campaign completes then (Unix µs).
    #[serde(default)]
    pub end_at_us: Option<i64>,
    /// Record each call (stereo WAV).
    #[serde(default)]
    pub record: bool,
    /// Longest call, seconds.
    #[serde(default)]
    pub max_duration_s: Option<u32>,
}

fn default_max_concurrent() -> u32 {
    10
}
fn default_max_cps() -> f64 {
    1.0
}
fn default_ring_timeout() -> u32 {
    30
}
fn default_timezone() -> String {
    "UTC".to_owned()
}
fn default_region() -> String {
    "US".to_owned()
}
fn default_priority() -> u32 {
    1
}

impl CampaignSettings {
    /// The windows in force (the campaign's, or the default).
    pub fn effective_windows(&self) -> Windows {
        self.windows.clone().unwrap_or_default()
    }
}

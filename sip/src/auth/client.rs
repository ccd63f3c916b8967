//! The client side across requests: which challenge to answer, and the nonce count.

use super::{AuthError, AuthHeader, Authorization, Challenge, Credentials, Qop, answer};

/// How [`DigestClient`] picks among several challenges for the same realm (a server offering
/// more than one algorithm sends one challenge per algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChallengePreference {
    /// The first supported challenge in the order received. RFC 8760 §2.4: the UAC "SHOULD use
    /// the topmost header field that it supports, unless a local policy dictates otherwise"
    /// (RFC 7616 §3.7 says the same for HTTP: the server lists them most preferred first).
    #[default]
    ServerOrder,
    /// Local policy: the strongest supported hash (SHA-512-256, then SHA-256, then MD5),
    /// whatever the order; ties keep the server's order. This resists a middlebox that
    /// reorders the headers to push the client to MD5.
    Strongest,
}

/// What [`DigestClient::handle_challenges`] concluded from a 401/407.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeOutcome {
    /// New challenges are stored: send the request again with [`DigestClient::authorize`].
    Retry,
    /// The request already carried credentials for this realm and the server challenged again
    /// without `stale=true`: the credentials are wrong. RFC 3261 §22.1: the UAC "SHOULD NOT
    /// re-attempt requests with the credentials that have just been rejected (though the
    /// request may be retried if the nonce was stale)".
    Rejected {
        /// The realm whose credentials were rejected.
        realm: String,
    },
}

#[derive(Debug, Clone)]
struct Active {
    header: AuthHeader,
    challenge: Challenge,
    /// Requests sent so far with this nonce.
    nc: u32,
}

/// At most this many realms are remembered; a request rarely crosses more than two (the
/// outbound proxy and the registrar), and the bound keeps a hostile peer from growing the list.
const MAX_ACTIVE: usize = 8;

/// A digest client for one user agent (for example one trunk registration): it stores the
/// challenges of the last 401/407, answers them on every later request with an increasing
/// nonce count, and notices rejected credentials.
///
/// ```
/// use sip::auth::{AuthHeader, Challenge, ChallengeOutcome, Credentials, DigestClient};
/// let mut client = DigestClient::new(Credentials::new("alice", "secret"));
/// let c = Challenge::parse(r#"Digest realm="atlanta.com", nonce="n1", qop="auth", algorithm=MD5"#)?;
/// assert_eq!(client.handle_challenges(AuthHeader::Www, &[c], &[])?, ChallengeOutcome::Retry);
/// let creds = client.authorize("REGISTER", "sip:atlanta.com", b"", "cn0001")?;
/// assert_eq!(creds[0].0, AuthHeader::Www);
/// assert_eq!(creds[0].1.nc, Some(1));
/// let again = client.authorize("REGISTER", "sip:atlanta.com", b"", "cn0002")?;
/// assert_eq!(again[0].1.nc, Some(2));
/// # Ok::<(), sip::auth::AuthError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DigestClient {
    default: Credentials,
    per_realm: Vec<(String, Credentials)>,
    preference: ChallengePreference,
    active: Vec<Active>,
}

impl DigestClient {
    /// A client that answers every realm with `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        DigestClient {
            default: credentials,
            per_realm: Vec::new(),
            preference: ChallengePreference::default(),
            active: Vec::new(),
        }
    }

    /// Uses `credentials` for `realm` instead of the default ones (realms compare exactly).
    pub fn with_realm(mut self, realm: impl Into<String>, credentials: Credentials) -> Self {
        self.per_realm.push((realm.into(), credentials));
        self
    }

    /// Sets how a challenge is chosen among several for one realm.
    pub fn with_preference(mut self, preference: ChallengePreference) -> Self {
        self.preference = preference;
        self
    }

    /// The credentials used for `realm`.
    pub fn credentials_for(&self, realm: &str) -> &Credentials {
        self.per_realm
            .iter()
            .find(|(r, _)| r == realm)
            .map_or(&self.default, |(_, c)| c)
    }

    /// Takes the challenges of one header kind from a 401 or 407 (all the `WWW-Authenticate`
    /// or all the `Proxy-Authenticate` values, in order) and remembers one per realm.
    ///
    /// `sent` holds the credentials the challenged request carried in the matching header
    /// (empty for a first attempt): a fresh challenge for a realm already answered there, and
    /// not marked `stale`, means the credentials were rejected.
    ///
    /// Errors with [`AuthError::NoUsableChallenge`] when some realm offers nothing this client
    /// supports (so the request cannot succeed).
    pub fn handle_challenges(
        &mut self,
        header: AuthHeader,
        challenges: &[Challenge],
        sent: &[Authorization],
    ) -> Result<ChallengeOutcome, AuthError> {
        if challenges.is_empty() {
            return Err(AuthError::NoUsableChallenge);
        }
        let mut realms: Vec<&str> = Vec::new();
        for c in challenges {
            if !realms.contains(&c.realm.as_str()) {
                realms.push(&c.realm);
            }
        }
        let mut chosen = Vec::with_capacity(realms.len());
        for realm in realms {
            let candidates = challenges
                .iter()
                .filter(|c| c.realm == realm && supported(c));
            let pick = match self.preference {
                ChallengePreference::ServerOrder => candidates.into_iter().next(),
                ChallengePreference::Strongest => {
                    candidates.fold(None, |best: Option<&Challenge>, c| match best {
                        Some(b)
                            if b.effective_algorithm().hash() >= c.effective_algorithm().hash() =>
                        {
                            Some(b)
                        }
                        _ => Some(c),
                    })
                }
            };
            let Some(pick) = pick else {
                return Err(AuthError::NoUsableChallenge);
            };
            if !pick.stale && sent.iter().any(|a| a.realm == realm) {
                return Ok(ChallengeOutcome::Rejected {
                    realm: realm.to_owned(),
                });
            }
            chosen.push(pick.clone());
        }
        for challenge in chosen {
            self.active
                .retain(|a| !(a.header == header && a.challenge.realm == challenge.realm));
            if self.active.len() >= MAX_ACTIVE {
                self.active.remove(0);
            }
            self.active.push(Active {
                header,
                challenge,
                nc: 0,
            });
        }
        Ok(ChallengeOutcome::Retry)
    }

    /// Credentials for a new request (method, Request-URI and body), one per remembered
    /// challenge, each with the header it goes in. Empty when nothing has been challenged yet.
    /// `cnonce` is the caller's fresh random value for this request.
    pub fn authorize(
        &mut self,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
    ) -> Result<Vec<(AuthHeader, Authorization)>, AuthError> {
        let mut out = Vec::with_capacity(self.active.len());
        for i in 0..self.active.len() {
            let a = &self.active[i];
            // RFC 7616 §3.4: the nc "MUST be specified if a qop parameter is sent" and counts
            // the requests sent with this nonce, this one included.
            let nc = a.nc.checked_add(1).ok_or(AuthError::NonceCountExhausted)?;
            let creds = self.credentials_for(&a.challenge.realm);
            let authz = answer(&a.challenge, creds, method, uri, body, cnonce, nc)?;
            out.push((a.header, authz));
            self.active[i].nc = nc;
        }
        Ok(out)
    }

    /// Forgets every remembered challenge (for example after the registration ended).
    pub fn clear(&mut self) {
        self.active.clear();
    }
}

/// Whether [`answer`] can answer this challenge.
fn supported(c: &Challenge) -> bool {
    let alg = c.effective_algorithm();
    if alg.hash().is_none() {
        return false;
    }
    match &c.qop {
        None => !alg.is_session(),
        Some(q) => q.contains(&Qop::Auth) || q.contains(&Qop::AuthInt),
    }
}

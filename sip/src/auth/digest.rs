//! The digest computation (RFC 7616 §3.4.1–§3.4.3) and the client's answer to one challenge.

use md5::Md5;
use sha2::{Sha256, Sha512_256};

use super::params::is_header_safe;
use super::{Algorithm, AuthError, Authorization, Challenge, Credentials, DigestHash, Qop, Secret};

/// Lowercase hex of the hash of the concatenation of `parts`.
pub(crate) fn hex_hash(hash: DigestHash, parts: &[&[u8]]) -> String {
    fn run<D: sha2::Digest>(parts: &[&[u8]]) -> String {
        let mut d = D::new();
        for p in parts {
            d.update(p);
        }
        hex::encode(d.finalize())
    }
    match hash {
        DigestHash::Md5 => run::<Md5>(parts),
        DigestHash::Sha256 => run::<Sha256>(parts),
        DigestHash::Sha512_256 => run::<Sha512_256>(parts),
    }
}

/// `H(username ":" realm ":" password)`, the value a server can store instead of the password
/// (RFC 7616 §3.4.2), as lowercase hex.
pub fn ha1(hash: DigestHash, username: &str, realm: &str, password: &str) -> String {
    hex_hash(
        hash,
        &[
            username.as_bytes(),
            b":",
            realm.as_bytes(),
            b":",
            password.as_bytes(),
        ],
    )
}

/// The inputs of one request digest, shared by the client (to answer) and the server (to check).
pub(crate) struct DigestInput<'a> {
    pub(crate) algorithm: &'a Algorithm,
    pub(crate) username: &'a str,
    pub(crate) realm: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) method: &'a str,
    pub(crate) uri: &'a str,
    pub(crate) body: &'a [u8],
    /// `Some((qop, nc, cnonce))` with a qop; `None` for RFC 2069.
    pub(crate) qop: Option<(&'a Qop, u32, &'a str)>,
}

/// Computes the request digest (the `response` parameter) for the given parameters, as lowercase
/// hex. `qop` is `Some((qop, nc, cnonce))`, or `None` for an RFC 2069 answer without qop.
///
/// Most callers want [`answer`] (client) or [`super::NonceIssuer::verify`] (server); this is the
/// bare formula, public for callers that hold their own nonce state.
#[allow(clippy::too_many_arguments)]
pub fn request_digest(
    algorithm: &Algorithm,
    username: &str,
    realm: &str,
    secret: &Secret,
    nonce: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    qop: Option<(&Qop, u32, &str)>,
) -> Result<String, AuthError> {
    compute(
        &DigestInput {
            algorithm,
            username,
            realm,
            nonce,
            method,
            uri,
            body,
            qop,
        },
        secret,
    )
}

pub(crate) fn compute(input: &DigestInput<'_>, secret: &Secret) -> Result<String, AuthError> {
    let hash = input
        .algorithm
        .hash()
        .ok_or_else(|| AuthError::UnsupportedAlgorithm(input.algorithm.as_str().to_owned()))?;
    // RFC 7616 §3.4.2: A1 = unq(username) ":" unq(realm) ":" passwd.
    let base = match secret {
        Secret::Password(p) => ha1(hash, input.username, input.realm, p),
        Secret::Ha1 { hash: have, hex } => {
            if *have != hash {
                return Err(AuthError::Ha1HashMismatch {
                    have: *have,
                    need: hash,
                });
            }
            hex.to_ascii_lowercase()
        }
    };
    let ha1 = if input.algorithm.is_session() {
        // RFC 7616 §3.4.2: for -sess, A1 = H(unq(username):unq(realm):passwd) ":"
        // unq(nonce-prime) ":" unq(cnonce-prime). The cnonce only exists with a qop.
        let Some((_, _, cnonce)) = input.qop else {
            return Err(AuthError::SessionWithoutQop);
        };
        hex_hash(
            hash,
            &[
                base.as_bytes(),
                b":",
                input.nonce.as_bytes(),
                b":",
                cnonce.as_bytes(),
            ],
        )
    } else {
        base
    };
    // RFC 7616 §3.4.3: A2 = Method ":" request-uri, and for auth-int also
    // ":" H(entity-body). RFC 3261 §22.4: the request-uri is the SIP Request-URI.
    let ha2 = match input.qop {
        Some((Qop::AuthInt, _, _)) => {
            let body_hash = hex_hash(hash, &[input.body]);
            hex_hash(
                hash,
                &[
                    input.method.as_bytes(),
                    b":",
                    input.uri.as_bytes(),
                    b":",
                    body_hash.as_bytes(),
                ],
            )
        }
        Some((Qop::Other(_), _, _)) => return Err(AuthError::UnsupportedQop),
        _ => hex_hash(hash, &[input.method.as_bytes(), b":", input.uri.as_bytes()]),
    };
    Ok(match input.qop {
        // RFC 7616 §3.4.1: response = KD(H(A1), unq(nonce) ":" nc ":" unq(cnonce) ":"
        // unq(qop) ":" H(A2)), with KD(secret, data) = H(concat(secret, ":", data)).
        Some((qop, nc, cnonce)) => {
            let nc = format!("{nc:08x}");
            hex_hash(
                hash,
                &[
                    ha1.as_bytes(),
                    b":",
                    input.nonce.as_bytes(),
                    b":",
                    nc.as_bytes(),
                    b":",
                    cnonce.as_bytes(),
                    b":",
                    qop.as_str().as_bytes(),
                    b":",
                    ha2.as_bytes(),
                ],
            )
        }
        // RFC 2069 §2.1.2 (kept by RFC 2617 §3.2.2.1 for compatibility):
        // response = KD(H(A1), unq(nonce) ":" H(A2)).
        None => hex_hash(
            hash,
            &[
                ha1.as_bytes(),
                b":",
                input.nonce.as_bytes(),
                b":",
                ha2.as_bytes(),
            ],
        ),
    })
}

/// Answers one challenge: the credentials for a request with this `method` (the SIP method, for
/// example `REGISTER`), Request-URI `uri` and `body`.
///
/// - The qop is `auth` when offered, else `auth-int`; a challenge without qop gets an RFC 2069
///   answer (no `cnonce`, no `nc`).
/// - `cnonce` is the caller's fresh random value (RFC 7616 §3.4: it should hold at least 64 bits
///   of randomness); `nc` is how many requests, this one included, used this nonce (1 for the
///   first). [`super::DigestClient`] keeps that count.
/// - `algorithm` and `opaque` are echoed as the challenge gave them (RFC 7616 §3.4: "The values
///   of the opaque and algorithm fields must be those supplied in the WWW-Authenticate response
///   header field").
pub fn answer(
    challenge: &Challenge,
    creds: &Credentials,
    method: &str,
    uri: &str,
    body: &[u8],
    cnonce: &str,
    nc: u32,
) -> Result<Authorization, AuthError> {
    for (name, value) in [
        ("username", creds.username.as_str()),
        ("method", method),
        ("uri", uri),
    ] {
        if !is_header_safe(value) {
            return Err(AuthError::InvalidValue(name));
        }
    }
    let algorithm = challenge.effective_algorithm();
    if algorithm.hash().is_none() {
        return Err(AuthError::UnsupportedAlgorithm(
            algorithm.as_str().to_owned(),
        ));
    }
    let qop = match &challenge.qop {
        None => None,
        Some(offered) => Some(if offered.contains(&Qop::Auth) {
            Qop::Auth
        } else if offered.contains(&Qop::AuthInt) {
            Qop::AuthInt
        } else {
            return Err(AuthError::UnsupportedQop);
        }),
    };
    if qop.is_some() {
        if cnonce.is_empty() {
            return Err(AuthError::EmptyCnonce);
        }
        if !is_header_safe(cnonce) {
            return Err(AuthError::InvalidValue("cnonce"));
        }
        if nc == 0 {
            return Err(AuthError::ZeroNonceCount);
        }
    }
    let response = compute(
        &DigestInput {
            algorithm: &algorithm,
            username: &creds.username,
            realm: &challenge.realm,
            nonce: &challenge.nonce,
            method,
            uri,
            body,
            qop: qop.as_ref().map(|q| (q, nc, cnonce)),
        },
        &creds.secret,
    )?;
    let with_qop = qop.is_some();
    Ok(Authorization {
        username: creds.username.clone(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_owned(),
        response,
        algorithm: challenge.algorithm.clone(),
        cnonce: with_qop.then(|| cnonce.to_owned()),
        opaque: challenge.opaque.clone(),
        qop,
        nc: with_qop.then_some(nc),
        userhash: false,
        params: Vec::new(),
    })
}

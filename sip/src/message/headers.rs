//! The ordered header list of a message, with names that know their compact forms.

use bytes::Bytes;

macro_rules! header_names {
    ($( $variant:ident => $canon:literal $(, $compact:literal)? ; )*) => {
        /// A header field name. Well-known names are variants (matched case-insensitively, compact
        /// forms included); every other name is kept as received.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $(
                #[doc = $canon]
                $variant,
            )*
            /// Any other header; compared case-insensitively, printed as received.
            Other(String),
        }

        impl HeaderName {
            /// The name from its wire form (long or compact, any case).
            ///
            /// Hot path: the name is lower-cased into a stack buffer and matched once, so a
            /// known name costs no allocation and no linear scan of the table.
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                let mut buf = [0u8; 24];
                if name.len() <= buf.len() {
                    for (d, s) in buf.iter_mut().zip(name) {
                        *d = s.to_ascii_lowercase();
                    }
                    if let Some(n) = Self::from_lower(&buf[..name.len()]) {
                        return n;
                    }
                }
                HeaderName::Other(String::from_utf8_lossy(name).into_owned())
            }

            /// The canonical (long) form of the name.
            pub fn as_str(&self) -> &str {
                match self {
                    $( HeaderName::$variant => $canon, )*
                    HeaderName::Other(s) => s,
                }
            }
        }
    };
}

header_names! {
    Accept => "Accept";
    AcceptEncoding => "Accept-Encoding";
    AcceptLanguage => "Accept-Language";
    AlertInfo => "Alert-Info";
    Allow => "Allow";
    AllowEvents => "Allow-Events", "u";
    AuthenticationInfo => "Authentication-Info";
    Authorization => "Authorization";
    CallId => "Call-ID", "i";
    CallInfo => "Call-Info";
    Contact => "Contact", "m";
    ContentDisposition => "Content-Disposition";
    ContentEncoding => "Content-Encoding", "e";
    ContentLanguage => "Content-Language";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    CSeq => "CSeq";
    Date => "Date";
    Diversion => "Diversion";
    ErrorInfo => "Error-Info";
    Event => "Event", "o";
    Expires => "Expires";
    From => "From", "f";
    InReplyTo => "In-Reply-To";
    MaxForwards => "Max-Forwards";
    MimeVersion => "MIME-Version";
    MinExpires => "Min-Expires";
    MinSe => "Min-SE";
    Organization => "Organization";
    PAssertedIdentity => "P-Asserted-Identity";
    PPreferredIdentity => "P-Preferred-Identity";
    Priority => "Priority";
    Privacy => "Privacy";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyRequire => "Proxy-Require";
    RAck => "RAck";
    Reason => "Reason";
    RecordRoute => "Record-Route";
    ReferTo => "Refer-To", "r";
    ReferredBy => "Referred-By", "b";
    ReplyTo => "Reply-To";
    Require => "Require";
    RetryAfter => "Retry-After";
    Route => "Route";
    RSeq => "RSeq";
    Server => "Server";
    SessionExpires => "Session-Expires", "x";
    Subject => "Subject", "s";
    SubscriptionState => "Subscription-State";
    Supported => "Supported", "k";
    Timestamp => "Timestamp";
    To => "To", "t";
    Unsupported => "Unsupported";
    UserAgent => "User-Agent";
    Via => "Via", "v";
    Warning => "Warning";
    WwwAuthenticate => "WWW-Authenticate";
    AcceptContact => "Accept-Contact", "a";
    RejectContact => "Reject-Contact", "j";
    RequestDisposition => "Request-Disposition", "d";
    Identity => "Identity", "y";
}

impl HeaderName {
    /// Lookup of a lower-cased wire name (long or compact form). Kept in step with the table
    /// above; a unit test checks every canonical and compact name round-trips.
    fn from_lower(name: &[u8]) -> Option<HeaderName> {
        Some(match name {
            b"accept" => HeaderName::Accept,
            b"accept-encoding" => HeaderName::AcceptEncoding,
            b"accept-language" => HeaderName::AcceptLanguage,
            b"alert-info" => HeaderName::AlertInfo,
            b"allow" => HeaderName::Allow,
            b"allow-events" | b"u" => HeaderName::AllowEvents,
            b"authentication-info" => HeaderName::AuthenticationInfo,
            b"authorization" => HeaderName::Authorization,
            b"call-id" | b"i" => HeaderName::CallId,
            b"call-info" => HeaderName::CallInfo,
            b"contact" | b"m" => HeaderName::Contact,
            b"content-disposition" => HeaderName::ContentDisposition,
            b"content-encoding" | b"e" => HeaderName::ContentEncoding,
            b"content-language" => HeaderName::ContentLanguage,
            b"content-length" | b"l" => HeaderName::ContentLength,
            b"content-type" | b"c" => HeaderName::ContentType,
            b"cseq" => HeaderName::CSeq,
            b"date" => HeaderName::Date,
            b"diversion" => HeaderName::Diversion,
            b"error-info" => HeaderName::ErrorInfo,
            b"event" | b"o" => HeaderName::Event,
            b"expires" => HeaderName::Expires,
            b"from" | b"f" => HeaderName::From,
            b"in-reply-to" => HeaderName::InReplyTo,
            b"max-forwards" => HeaderName::MaxForwards,
            b"mime-version" => HeaderName::MimeVersion,
            b"min-expires" => HeaderName::MinExpires,
            b"min-se" => HeaderName::MinSe,
            b"organization" => HeaderName::Organization,
            b"p-asserted-identity" => HeaderName::PAssertedIdentity,
            b"p-preferred-identity" => HeaderName::PPreferredIdentity,
            b"priority" => HeaderName::Priority,
            b"privacy" => HeaderName::Privacy,
            b"proxy-authenticate" => HeaderName::ProxyAuthenticate,
            b"proxy-authorization" => HeaderName::ProxyAuthorization,
            b"proxy-require" => HeaderName::ProxyRequire,
            b"rack" => HeaderName::RAck,
            b"reason" => HeaderName::Reason,
            b"record-route" => HeaderName::RecordRoute,
            b"refer-to" | b"r" => HeaderName::ReferTo,
            b"referred-by" | b"b" => HeaderName::ReferredBy,
            b"reply-to" => HeaderName::ReplyTo,
            b"require" => HeaderName::Require,
            b"retry-after" => HeaderName::RetryAfter,
            b"route" => HeaderName::Route,
            b"rseq" => HeaderName::RSeq,
            b"server" => HeaderName::Server,
            b"session-expires" | b"x" => HeaderName::SessionExpires,
            b"subject" | b"s" => HeaderName::Subject,
            b"subscription-state" => HeaderName::SubscriptionState,
            b"supported" | b"k" => HeaderName::Supported,
            b"timestamp" => HeaderName::Timestamp,
            b"to" | b"t" => HeaderName::To,
            b"unsupported" => HeaderName::Unsupported,
            b"user-agent" => HeaderName::UserAgent,
            b"via" | b"v" => HeaderName::Via,
            b"warning" => HeaderName::Warning,
            b"www-authenticate" => HeaderName::WwwAuthenticate,
            b"accept-contact" | b"a" => HeaderName::AcceptContact,
            b"reject-contact" | b"j" => HeaderName::RejectContact,
            b"request-disposition" | b"d" => HeaderName::RequestDisposition,
            b"identity" | b"y" => HeaderName::Identity,
            _ => return None,
        })
    }

    /// Whether two names denote the same header (compact and long forms are equal; other names
    /// compare case-insensitively).
    pub fn matches(&self, other: &HeaderName) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

/// One header field line: a name and its (unfolded) raw value, which may hold several
/// comma-separated values for list headers such as Via.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: HeaderName,
    /// The name as it was received (compact or long, original case), printed back as is.
    /// `None` for headers the stack made itself; those print the canonical form.
    pub raw_name: Option<Bytes>,
    /// The value with leading and trailing whitespace removed and line folding replaced by a
    /// single space.
    pub value: Bytes,
}

impl Header {
    /// A header made by the stack (printed with the canonical name).
    pub fn new(name: HeaderName, value: impl Into<Bytes>) -> Header {
        Header {
            name,
            raw_name: None,
            value: value.into(),
        }
    }
}

/// The header fields of a message, in their original order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<Header>,
}

impl Headers {
    /// An empty list.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// An empty list with room for `n` lines.
    pub fn with_capacity(n: usize) -> Headers {
        Headers {
            entries: Vec::with_capacity(n),
        }
    }

    /// Every header line in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.entries.iter()
    }

    /// The number of header lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no header lines.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw value of the first line with this name.
    pub fn get(&self, name: &HeaderName) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|h| h.name.matches(name))
            .map(|h| &h.value)
    }

    /// The raw values of every line with this name, in order (each may hold a comma list).
    pub fn get_all<'a, 'n>(
        &'a self,
        name: &'n HeaderName,
    ) -> impl Iterator<Item = &'a Bytes> + use<'a, 'n> {
        self.entries
            .iter()
            .filter(move |h| h.name.matches(name))
            .map(|h| &h.value)
    }

    /// Append a line.
    pub fn push(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        self.entries.push(Header::new(name, value));
    }

    /// Append a line as received.
    pub fn push_header(&mut self, header: Header) {
        self.entries.push(header);
    }

    /// Insert a line before all others (as a proxy does with Via).
    pub fn push_front(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        self.entries.insert(0, Header::new(name, value));
    }

    /// Remove every line with this name; returns how many were removed.
    pub fn remove(&mut self, name: &HeaderName) -> usize {
        let before = self.entries.len();
        self.entries.retain(|h| !h.name.matches(name));
        before - self.entries.len()
    }

    /// Replace every line with this name by one line with `value`, kept at the position of the
    /// first one (or appended).
    pub fn set(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        let value = value.into();
        match self.entries.iter().position(|h| h.name.matches(&name)) {
            Some(i) => {
                self.entries[i] = Header::new(name.clone(), value);
                let mut seen = 0usize;
                self.entries.retain(|h| {
                    if h.name.matches(&name) {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.entries.push(Header::new(name, value)),
        }
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

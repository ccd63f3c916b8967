//! Ordered `;name=value` parameter lists, shared by URIs and typed headers.

use std::fmt;

use bytes::{BufMut, BytesMut};

/// An ordered list of parameters, each a name and an optional value.
///
/// Names are looked up case-insensitively (RFC 3261 §7.3.1: parameter names are
/// case-insensitive). Values are kept exactly as received: a quoted-string value keeps its
/// quotes and backslash escapes, a URI parameter keeps its `%HH` escapes, so printing gives
/// back the original text.
///
/// Storage is two allocations whatever the count (all names and values concatenated in one
/// string, plus a list of offsets), because every Via, From, To and URI carries a few
/// parameters and they are parsed on the hot path. The layout is canonical (it depends only on
/// the sequence of names and values), so the derived equality is equality of the lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    text: String,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    start: u32,
    name_end: u32,
    end: u32,
    has_value: bool,
}

impl Params {
    /// An empty list.
    pub fn new() -> Params {
        Params::default()
    }

    /// Room for `text` more bytes of names and values (parsers know the upper bound).
    pub(crate) fn reserve(&mut self, text: usize) {
        self.text.reserve(text);
        self.entries.reserve(4);
    }

    fn name_of(&self, e: &Entry) -> &str {
        &self.text[e.start as usize..e.name_end as usize]
    }

    fn value_of(&self, e: &Entry) -> Option<&str> {
        e.has_value
            .then(|| &self.text[e.name_end as usize..e.end as usize])
    }

    /// The value of the first parameter called `name`: `None` when absent, `Some(None)` when
    /// present without a value (`;lr`), `Some(Some(v))` otherwise.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.entries
            .iter()
            .find(|e| self.name_of(e).eq_ignore_ascii_case(name))
            .map(|e| self.value_of(e))
    }

    /// Whether a parameter called `name` is present (with or without a value).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Set `name` to `value`, replacing the first parameter of that name in place or appending.
    pub fn set(&mut self, name: impl Into<String>, value: Option<impl Into<String>>) {
        let name = name.into();
        let value = value.map(Into::into);
        if !self.contains(&name) {
            self.push(name, value);
            return;
        }
        let mut out = Params::new();
        let mut replaced = false;
        for (n, v) in self.iter() {
            if !replaced && n.eq_ignore_ascii_case(&name) {
                out.push(name.as_str(), value.as_deref());
                replaced = true;
            } else {
                out.push(n, v);
            }
        }
        *self = out;
    }

    /// Append a parameter without looking for an existing one (duplicates are kept in order).
    pub fn push(&mut self, name: impl AsRef<str>, value: Option<impl AsRef<str>>) {
        let start = self.text.len() as u32;
        self.text.push_str(name.as_ref());
        let name_end = self.text.len() as u32;
        let has_value = value.is_some();
        if let Some(v) = value {
            self.text.push_str(v.as_ref());
        }
        self.entries.push(Entry {
            start,
            name_end,
            end: self.text.len() as u32,
            has_value,
        });
    }

    /// Remove every parameter called `name`; returns whether any was removed.
    pub fn remove(&mut self, name: &str) -> bool {
        if !self.contains(name) {
            return false;
        }
        let mut out = Params::new();
        for (n, v) in self.iter().filter(|(n, _)| !n.eq_ignore_ascii_case(name)) {
            out.push(n, v);
        }
        *self = out;
        true
    }

    /// The parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.entries
            .iter()
            .map(|e| (self.name_of(e), self.value_of(e)))
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Params {
    /// Append `;name=value` for each parameter to `out`, as `Display` does.
    pub fn print(&self, out: &mut BytesMut) {
        for (n, v) in self.iter() {
            out.put_u8(b';');
            out.put_slice(n.as_bytes());
            if let Some(v) = v {
                out.put_u8(b'=');
                out.put_slice(v.as_bytes());
            }
        }
    }
}

impl fmt::Display for Params {
    /// Prints `;name=value` for each parameter (nothing for an empty list).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in self.iter() {
            f.write_str(";")?;
            f.write_str(n)?;
            if let Some(v) = v {
                f.write_str("=")?;
                f.write_str(v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Params;

    #[test]
    fn lookup_is_case_insensitive_and_keeps_order_and_duplicates() {
        let mut p = Params::new();
        p.push("Tag", Some("a"));
        p.push("lr", None::<&str>);
        p.push("tag", Some("b"));
        assert_eq!(p.get("TAG"), Some(Some("a")));
        assert_eq!(p.get("LR"), Some(None));
        assert_eq!(p.get("x"), None);
        assert_eq!(p.to_string(), ";Tag=a;lr;tag=b");
        p.set("tag", Some("c"));
        assert_eq!(p.to_string(), ";tag=c;lr;tag=b");
        assert!(p.remove("TAG"));
        assert!(!p.remove("tag"));
        assert_eq!(p.to_string(), ";lr");
        p.set("q", Some("0.5"));
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [("lr", None), ("q", Some("0.5"))]
        );
    }

    #[test]
    fn equality_is_list_equality_whatever_the_edit_history() {
        let mut a = Params::new();
        a.push("x", Some("1"));
        a.push("y", None::<&str>);
        a.remove("x");
        let mut b = Params::new();
        b.push("y", None::<&str>);
        assert_eq!(a, b);
        // A name/value split that concatenates to the same text is still a different list.
        let mut c = Params::new();
        c.push("ab", Some("c"));
        let mut d = Params::new();
        d.push("a", Some("bc"));
        assert_ne!(c, d);
    }
}

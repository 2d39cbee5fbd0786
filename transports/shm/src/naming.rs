//! Segment names: `slimebench.{scope}.{alias}.{incarnation:016x}.{db|r<N>}`
//! under the segment directory (`/dev/shm`), and the wake socket's abstract
//! name `slimebench.{scope}.{alias}.{incarnation:016x}.wake`.
//!
//! Scope and alias are escaped to `[A-Za-z0-9_-]` plus `%XX`, so `.` only ever
//! separates fields and one alias's prefix never matches another's; a
//! component longer than [`MAX_COMPONENT`] is replaced by `~` and a hash.
//! A name read from a peer's descriptor is parsed back and refused unless it
//! has exactly this shape (no `/`, no `..`, nothing outside our prefix).

/// Every file and socket name starts with this.
pub const NAME_PREFIX: &str = "slimebench.";
/// Longest escaped scope or alias kept verbatim.
pub const MAX_COMPONENT: usize = 64;

/// Who a transport is: names its segments, so a crashed run's leftovers can be
/// found (same scope and alias, another incarnation) and removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmNaming {
    /// Run scope (the control plane's `{scope}`).
    pub scope: String,
    /// Agent alias (`bench-worker`, `bench-driver`, …).
    pub alias: String,
    /// Fresh, non-zero id of this start; also the published endpoint id.
    pub incarnation: u64,
}

/// What a segment is, from the last field of its name.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum SegKind {
    Doorbell,
    Region(u32),
}

/// A parsed segment name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedName {
    pub scope: String,
    pub alias: String,
    pub incarnation: u64,
    pub kind: SegKind,
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Escape one component (scope or alias).
pub(crate) fn component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        // The empty scope is legal for the control plane; keep it distinct.
        out.push('%');
    }
    if out.len() > MAX_COMPONENT {
        out = format!("~{:016x}", fnv1a(s));
    }
    out
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_COMPONENT
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'%' | b'~'))
}

/// The names of one transport's segments.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub scope: String,
    pub alias: String,
    pub incarnation: u64,
}

impl Names {
    pub(crate) fn new(n: &ShmNaming) -> Names {
        Names {
            scope: component(&n.scope),
            alias: component(&n.alias),
            incarnation: n.incarnation,
        }
    }

    fn stem(&self) -> String {
        format!("{NAME_PREFIX}{}.{}.{:016x}", self.scope, self.alias, self.incarnation)
    }

    pub(crate) fn doorbell(&self) -> String {
        format!("{}.db", self.stem())
    }

    pub(crate) fn region(&self, index: u32) -> String {
        format!("{}.r{index}", self.stem())
    }

    pub(crate) fn wake(&self) -> String {
        format!("{}.wake", self.stem())
    }

    /// Prefix shared by every incarnation of this scope and alias.
    #[cfg(test)]
    pub(crate) fn alias_prefix(&self) -> String {
        format!("{NAME_PREFIX}{}.{}.", self.scope, self.alias)
    }

    pub(crate) fn of(parsed: &ParsedName) -> Names {
        Names {
            scope: parsed.scope.clone(),
            alias: parsed.alias.clone(),
            incarnation: parsed.incarnation,
        }
    }
}

/// Parse a segment file name; `None` for anything that is not exactly ours.
pub(crate) fn parse(name: &str) -> Option<ParsedName> {
    if name.len() > 255 {
        return None;
    }
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let mut it = rest.split('.');
    let scope = it.next()?;
    let alias = it.next()?;
    let inc = it.next()?;
    let kind = it.next()?;
    if it.next().is_some() || !valid_component(scope) || !valid_component(alias) {
        return None;
    }
    if inc.len() != 16 || !inc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let incarnation = u64::from_str_radix(inc, 16).ok()?;
    let kind = match kind {
        "db" => SegKind::Doorbell,
        k => {
            let digits = k.strip_prefix('r')?;
            if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // No leading zeros: one region, one name.
            if digits.len() > 1 && digits.starts_with('0') {
                return None;
            }
            SegKind::Region(digits.parse().ok()?)
        }
    };
    Some(ParsedName {
        scope: scope.to_owned(),
        alias: alias.to_owned(),
        incarnation,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(scope: &str, alias: &str) -> ShmNaming {
        ShmNaming {
            scope: scope.into(),
            alias: alias.into(),
            incarnation: 0xabc,
        }
    }

    #[test]
    fn names_round_trip() {
        let n = Names::new(&naming("run.1", "bench-worker"));
        assert_eq!(n.doorbell(), "slimebench.run%2E1.bench-worker.0000000000000abc.db");
        let p = parse(&n.doorbell()).unwrap();
        assert_eq!((p.incarnation, p.kind), (0xabc, SegKind::Doorbell));
        assert_eq!(parse(&n.region(12)).unwrap().kind, SegKind::Region(12));
        assert!(n.doorbell().starts_with(&n.alias_prefix()));
        // An alias that is a prefix of another never shares its prefix.
        let a = Names::new(&naming("s", "a"));
        let ab = Names::new(&naming("s", "a.b"));
        assert!(!ab.doorbell().starts_with(&a.alias_prefix()));
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "../etc/passwd",
            "slimebench.s.a.0000000000000abc.db/../../x",
            "slimebench.s.a.0000000000000abc",
            "slimebench.s.a.0000000000000ABC.db",
            "slimebench.s.a.abc.db",
            "slimebench.s.a.0000000000000abc.r",
            "slimebench.s.a.0000000000000abc.r01",
            "slimebench.s.a.0000000000000abc.rx",
            "slimebench.s.a.0000000000000abc.db.extra",
            "slimebench..a.0000000000000abc.db",
            "slimebench.s/x.a.0000000000000abc.db",
            "other.s.a.0000000000000abc.db",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn long_and_empty_components() {
        let long = "x".repeat(300);
        let c = component(&long);
        assert!(c.starts_with('~') && c.len() == 17);
        assert_eq!(component(""), "%");
        let n = Names::new(&naming(&long, ""));
        assert!(n.doorbell().len() < 255);
        assert!(parse(&n.doorbell()).is_some());
    }
}

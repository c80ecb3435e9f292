//! Small text forms shared by both sides: a pod's workload name, an address as text, a
//! time as RFC 3339.

/// A pod's workload: its name without the pod and ReplicaSet hashes a Deployment adds
/// (`web-7c9f8d6b5-x2k4q` → `web`), so learning and windows span a workload's replicas.
/// Kubernetes draws both from a vowel-free alphabet; a StatefulSet's `db-0` stays itself.
pub fn workload_of(pod_name: &str) -> &str {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let hashy = |s: &str, lens: std::ops::RangeInclusive<usize>| {
        lens.contains(&s.len()) && s.bytes().all(|b| ALPHABET.contains(&b))
    };
    let Some((rest, pod_hash)) = pod_name.rsplit_once('-') else {
        return pod_name;
    };
    if rest.is_empty() || !hashy(pod_hash, 5..=5) {
        return pod_name;
    }
    match rest.rsplit_once('-') {
        Some((name, rs_hash)) if !name.is_empty() && hashy(rs_hash, 6..=10) => name,
        _ => rest, // a DaemonSet or Job pod: name-xxxxx
    }
}

/// Appends an address as `Display` writes it. IPv4, most of what a collector sends, is
/// written by hand: `Display` goes through the formatting machinery (padding, width),
/// several times the cost of a flow record's whole encoding.
pub fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    let std::net::IpAddr::V4(v4) = ip else {
        use std::fmt::Write as _;
        let _ = write!(out, "{ip}");
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// `secs` and `nanos` since the epoch as RFC 3339 in UTC with nanoseconds
/// (`2026-12-06T22:02:16.000000000Z`), without a calendar crate.
pub fn rfc3339_utc(secs: u64, nanos: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's civil_from_days).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The day count since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// days_from_civil), the inverse of [`civil_from_days`].
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

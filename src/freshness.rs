//! The origin's cache rules for a stored title (RFC 2326 §13 and §12.8,
//! which defer to HTTP/1.1 caching): is it fresh, stale, or not to be
//! served from the store at all?
//!
//! Sans-io: the inputs are the origin's cache headers as stored with the
//! title, the time the title was last fetched or revalidated, and `now`.
//!
//! | Origin says                                | Decision                                    |
//! |--------------------------------------------|---------------------------------------------|
//! | `private`, `no-store`                      | [`Freshness::NotStorable`]                  |
//! | `no-cache`                                 | stale always; 504 if the origin is unreachable |
//! | `s-maxage=N`, else `max-age=N`             | fresh for N s after validation              |
//! | `Expires` (no max-age)                     | fresh until then                            |
//! | `Last-Modified` only                       | fresh for 10 % of its age at validation, ≤ 24 h |
//! | nothing                                    | fresh for `cache.default_fresh_secs`        |
//! | `must-revalidate`, `proxy-revalidate`, `s-maxage` | once stale: 504 if the origin is unreachable |
//! | otherwise, once stale                      | revalidate; serve stale if the origin is unreachable |
//! | validation time unknown (older metadata)   | stale                                       |
//!
//! `public` changes nothing for a shared cache (storable is the default) and
//! `no-transform` is honoured by construction: the proxy forwards packets
//! exactly as received. An unparsable `max-age` or `Expires` counts as
//! already expired (RFC 9111 §4.2.1, §5.3).

use std::time::{Duration, SystemTime};

use streamcache_cache::CacheHeaders;

/// Upper bound of the heuristic freshness lifetime.
const HEURISTIC_CAP: Duration = Duration::from_secs(24 * 3600);
/// Delta-seconds beyond this are taken as this (RFC 9111 §1.2.2).
const MAX_DELTA_SECS: u64 = 1 << 31;

/// What the cache rules say about a stored title at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it without contacting the origin.
    Fresh,
    /// Revalidate it with the origin first.
    Stale {
        /// If the origin cannot be reached, answer 504 rather than serve the
        /// stale copy (`no-cache`, `must-revalidate`, `proxy-revalidate`).
        strict: bool,
    },
    /// The origin forbids storing it (`private`, `no-store`): never serve it
    /// from the store.
    NotStorable,
}

/// The directives of a `Cache-Control` response header that matter to a
/// shared cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_cache: bool,
    pub no_store: bool,
    pub private: bool,
    /// `must-revalidate` or `proxy-revalidate` (the same for a shared cache).
    pub must_revalidate: bool,
    /// `max-age`, or `s-maxage` which overrides it for shared caches.
    pub max_age: Option<Duration>,
}

impl CacheControl {
    /// Whether a shared cache may store what came with these directives.
    pub fn storable(value: Option<&str>) -> bool {
        let cc = value.map(CacheControl::parse).unwrap_or_default();
        !(cc.private || cc.no_store)
    }

    /// Parses a `Cache-Control` value. Unknown directives are ignored;
    /// directive names are case-insensitive.
    pub fn parse(value: &str) -> CacheControl {
        let mut cc = CacheControl::default();
        let mut max_age = None;
        let mut s_maxage = None;
        for directive in split_directives(value) {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            match name.to_ascii_lowercase().as_str() {
                // With a field list these concern only some headers; an RTSP
                // cache stores the presentation whole, so honour them whole.
                "no-cache" => cc.no_cache = true,
                "private" => cc.private = true,
                "no-store" => cc.no_store = true,
                "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                // The first occurrence counts (RFC 9111 §4.2.1).
                "max-age" => max_age = max_age.or(Some(delta_seconds(arg))),
                "s-maxage" => s_maxage = s_maxage.or(Some(delta_seconds(arg))),
                // "public", "no-transform" and anything else: see module docs.
                _ => {}
            }
        }
        if s_maxage.is_some() {
            // s-maxage implies proxy-revalidate (RFC 9111 §5.2.2.10).
            cc.must_revalidate = true;
        }
        cc.max_age = s_maxage.or(max_age);
        cc
    }
}

/// Splits on commas that are not inside a quoted string.
fn split_directives(value: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    value
        .split(move |c| {
            if c == '"' {
                quoted = !quoted;
            }
            c == ',' && !quoted
        })
        .filter(|d| !d.trim().is_empty())
}

/// A delta-seconds argument; missing or invalid means zero (stale), too
/// large means the maximum.
fn delta_seconds(arg: Option<&str>) -> Duration {
    let secs = match arg {
        Some(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => a
            .parse::<u64>()
            .map_or(MAX_DELTA_SECS, |n| n.min(MAX_DELTA_SECS)),
        _ => 0,
    };
    Duration::from_secs(secs)
}

/// Decides whether a stored title with `headers`, last fetched or
/// revalidated at `validated_at`, may be served at `now`. `default_fresh`
/// is the lifetime of a title whose origin sent no freshness information.
pub fn assess(
    headers: &CacheHeaders,
    validated_at: Option<SystemTime>,
    now: SystemTime,
    default_fresh: Duration,
) -> Freshness {
    let cc = headers
        .cache_control
        .as_deref()
        .map(CacheControl::parse)
        .unwrap_or_default();
    if cc.private || cc.no_store {
        return Freshness::NotStorable;
    }
    let stale = Freshness::Stale {
        strict: cc.no_cache || cc.must_revalidate,
    };
    if cc.no_cache {
        return stale;
    }
    let Some(validated_at) = validated_at else {
        return stale; // age unknown
    };
    let lifetime = lifetime(&cc, headers, validated_at, default_fresh);
    // A clock that went backwards makes the age zero, not negative.
    let age = now.duration_since(validated_at).unwrap_or(Duration::ZERO);
    if age < lifetime {
        Freshness::Fresh
    } else {
        stale
    }
}

/// The freshness lifetime: explicit (`max-age`, then `Expires`), else
/// heuristic from `Last-Modified`, else the configured default.
fn lifetime(
    cc: &CacheControl,
    headers: &CacheHeaders,
    validated_at: SystemTime,
    default_fresh: Duration,
) -> Duration {
    if let Some(max_age) = cc.max_age {
        return max_age;
    }
    if let Some(expires) = &headers.expires {
        // The origin's Date is not stored; the validation time stands in.
        return match httpdate::parse_http_date(expires.trim()) {
            Ok(at) => at.duration_since(validated_at).unwrap_or(Duration::ZERO),
            Err(_) => Duration::ZERO,
        };
    }
    if let Some(last_modified) = &headers.last_modified {
        return match httpdate::parse_http_date(last_modified.trim()) {
            Ok(at) => {
                (validated_at.duration_since(at).unwrap_or(Duration::ZERO) / 10).min(HEURISTIC_CAP)
            }
            Err(_) => Duration::ZERO,
        };
    }
    default_fresh
}

/// `t` as Unix milliseconds, the form stored in the metadata (`None`
/// before 1970).
pub fn unix_ms(t: SystemTime) -> Option<u64> {
    let ms = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok()
}

/// The time of stored Unix milliseconds.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;

    /// 2024-02-06T10:00:00Z, as the validation time of every case.
    fn t0() -> SystemTime {
        httpdate::parse_http_date("Tue, 06 Feb 2024 10:00:00 GMT").unwrap()
    }

    fn at(secs_after_t0: i64) -> SystemTime {
        if secs_after_t0 >= 0 {
            t0() + Duration::from_secs(secs_after_t0.unsigned_abs())
        } else {
            t0() - Duration::from_secs(secs_after_t0.unsigned_abs())
        }
    }

    fn date(secs_after_t0: i64) -> String {
        httpdate::fmt_http_date(at(secs_after_t0))
    }

    fn headers(cc: Option<&str>, expires: Option<String>, lm: Option<String>) -> CacheHeaders {
        CacheHeaders {
            cache_control: cc.map(str::to_owned),
            expires,
            last_modified: lm,
            etag: None,
        }
    }

    const FRESH: Freshness = Freshness::Fresh;
    const STALE: Freshness = Freshness::Stale { strict: false };
    const STRICT: Freshness = Freshness::Stale { strict: true };
    const NOT_STORABLE: Freshness = Freshness::NotStorable;

    #[test]
    fn freshness_table() {
        let default = Duration::from_secs(HOUR);
        #[rustfmt::skip]
        let cases: Vec<(&str, CacheHeaders, i64, Freshness)> = vec![
            // (what, headers, seconds since validation, expected)
            ("no headers: default lifetime", headers(None, None, None), 3599, FRESH),
            ("no headers: past default", headers(None, None, None), 3600, STALE),
            ("max-age fresh", headers(Some("max-age=60"), None, None), 59, FRESH),
            ("max-age stale", headers(Some("max-age=60"), None, None), 60, STALE),
            ("max-age=0", headers(Some("max-age=0"), None, None), 0, STALE),
            ("max-age beats Expires", headers(Some("max-age=10"), Some(date(1000)), None), 20, STALE),
            ("max-age beats default", headers(Some("max-age=7200"), None, None), 3700, FRESH),
            ("s-maxage beats max-age", headers(Some("max-age=10, s-maxage=100"), None, None), 50, FRESH),
            ("s-maxage implies proxy-revalidate", headers(Some("s-maxage=10"), None, None), 50, STRICT),
            ("quoted max-age", headers(Some("max-age=\"60\""), None, None), 30, FRESH),
            ("invalid max-age is stale", headers(Some("max-age=soon"), None, None), 0, STALE),
            ("huge max-age is capped, not zero", headers(Some("max-age=99999999999999999999999"), None, None), 1000, FRESH),
            ("first max-age counts", headers(Some("max-age=100, max-age=1"), None, None), 50, FRESH),
            ("Expires ahead", headers(None, Some(date(100)), None), 99, FRESH),
            ("Expires passed", headers(None, Some(date(100)), None), 100, STALE),
            ("Expires before validation", headers(None, Some(date(-5)), None), 0, STALE),
            ("invalid Expires is expired", headers(None, Some("0".into()), None), 0, STALE),
            ("Expires beats heuristic", headers(None, Some(date(10)), Some(date(-100 * HOUR as i64))), 20, STALE),
            ("heuristic: 10% of 10 h = 1 h", headers(None, None, Some(date(-10 * HOUR as i64))), 3599, FRESH),
            ("heuristic: past 10%", headers(None, None, Some(date(-10 * HOUR as i64))), 3600, STALE),
            ("heuristic capped at 24 h", headers(None, None, Some(date(-1000 * HOUR as i64))), 24 * 3600, STALE),
            ("heuristic cap still fresh before", headers(None, None, Some(date(-1000 * HOUR as i64))), 24 * 3600 - 1, FRESH),
            ("Last-Modified in the future", headers(None, None, Some(date(60))), 0, STALE),
            ("invalid Last-Modified", headers(None, None, Some("yesterday".into())), 0, STALE),
            ("no-cache always revalidates", headers(Some("no-cache"), None, None), 0, STRICT),
            ("no-cache beats max-age", headers(Some("max-age=600, no-cache"), None, None), 1, STRICT),
            ("no-cache with fields", headers(Some("no-cache=\"Set-Cookie, Foo\""), None, None), 1, STRICT),
            ("must-revalidate fresh", headers(Some("must-revalidate, max-age=60"), None, None), 10, FRESH),
            ("must-revalidate stale", headers(Some("must-revalidate, max-age=60"), None, None), 61, STRICT),
            ("proxy-revalidate stale", headers(Some("proxy-revalidate, max-age=60"), None, None), 61, STRICT),
            ("private", headers(Some("private, max-age=600"), None, None), 1, NOT_STORABLE),
            ("private with fields", headers(Some("private=\"x\""), None, None), 1, NOT_STORABLE),
            ("no-store", headers(Some("no-store"), None, None), 1, NOT_STORABLE),
            ("case-insensitive", headers(Some("No-Store"), None, None), 1, NOT_STORABLE),
            ("public changes nothing", headers(Some("public, max-age=60"), None, None), 10, FRESH),
            ("no-transform changes nothing", headers(Some("no-transform"), None, None), 10, FRESH),
            ("unknown directives ignored", headers(Some("foo=\"a,b\", max-age=60 ,,"), None, None), 10, FRESH),
            ("empty Cache-Control", headers(Some(""), None, None), 10, FRESH),
            ("clock went backwards", headers(Some("max-age=60"), None, None), -30, FRESH),
        ];
        for (what, headers, age, expected) in cases {
            assert_eq!(
                assess(&headers, Some(t0()), at(age), default),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn unknown_validation_time_is_stale() {
        let h = headers(Some("max-age=600"), None, None);
        assert_eq!(assess(&h, None, t0(), Duration::from_secs(HOUR)), STALE);
        let h = headers(Some("must-revalidate"), None, None);
        assert_eq!(assess(&h, None, t0(), Duration::from_secs(HOUR)), STRICT);
        let h = headers(Some("no-store"), None, None);
        assert_eq!(assess(&h, None, t0(), Duration::ZERO), NOT_STORABLE);
    }

    #[test]
    fn default_lifetime_is_the_configured_one() {
        let h = CacheHeaders::default();
        assert_eq!(assess(&h, Some(t0()), at(0), Duration::ZERO), STALE);
        assert_eq!(
            assess(&h, Some(t0()), at(9), Duration::from_secs(10)),
            FRESH
        );
    }

    #[test]
    fn parses_directives() {
        let cc = CacheControl::parse(" Max-Age = 30 , MUST-REVALIDATE,private=\"a, b\" ");
        assert_eq!(
            cc,
            CacheControl {
                no_cache: false,
                no_store: false,
                private: true,
                must_revalidate: true,
                max_age: Some(Duration::from_secs(30)),
            }
        );
        assert_eq!(
            CacheControl::parse("max-age"),
            CacheControl {
                max_age: Some(Duration::ZERO),
                ..CacheControl::default()
            }
        );
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::project::{from_body, from_path, from_query, project_of};
use super::*;
use crate::config::{ProjectQuota, QuotaLimits};

const SECOND: u64 = 1_000_000_000;

fn limits(projects: &[(&str, QuotaLimits)], default: Option<QuotaLimits>) -> Limits {
    let mut limits = crate::config::parse(
        "[discovery]\nkind = \"static\"\nnodes = [{ address = \"127.0.0.1:7070\" }]\n",
    )
    .unwrap()
    .limits;
    limits.projects = projects
        .iter()
        .map(|(name, l)| ProjectQuota {
            name: name.to_string(),
            limits: *l,
        })
        .collect();
    limits.project_default = default;
    limits
}

fn concurrent(max: u64) -> QuotaLimits {
    QuotaLimits {
        max_concurrent: Some(max),
        ..QuotaLimits::default()
    }
}

fn rate(rate: u64, burst: u64) -> QuotaLimits {
    QuotaLimits {
        rate_per_s: Some(rate),
        burst: Some(burst),
        ..QuotaLimits::default()
    }
}

/// Quotas on a clock the test moves, and the clock.
fn manual(limits: &Limits, max_tracked: usize) -> (ProjectQuotas, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(0));
    let quotas = ProjectQuotas::with_clock(limits, Clock::Manual(now.clone()), max_tracked);
    (quotas, now)
}

#[test]
fn the_project_comes_from_the_body_then_the_query_then_the_path() {
    let body = br#"{"sql": "select 1", "project": "learn_kylin", "limit": 50}"#;
    let base = "/kylin/api";
    let of = |body: &[u8], query, path| project_of(body, query, path, base).map(|p| p.into_owned());
    assert_eq!(
        of(body, Some("project=other"), "/kylin/api/query").as_deref(),
        Some("learn_kylin")
    );
    assert_eq!(
        of(b"", Some("a=1&project=q"), "/kylin/api/query").as_deref(),
        Some("q")
    );
    assert_eq!(
        of(b"not json", Some("project=q"), "/x").as_deref(),
        Some("q")
    );
    assert_eq!(
        of(b"{\"sql\": \"x\"}", None, "/kylin/api/projects/p5/x").as_deref(),
        Some("p5")
    );
    assert_eq!(
        of(b"{\"project\": \"\"}", None, "/kylin/api/tables/p3/DB.T").as_deref(),
        Some("p3")
    );
    assert_eq!(
        of(b"{\"project\": 7}", Some("project="), "/kylin/api/query"),
        None
    );
    assert_eq!(of(b"[1, 2]", None, "/kylin/api/tables_and_columns"), None);
}

#[test]
fn a_project_inside_the_sql_string_does_not_fool_the_body_scan() {
    let body =
        br#"{"sql": "select '\"project\": \"evil\"' as \"project\" from t", "project": "good"}"#;
    assert_eq!(from_body(body).as_deref(), Some("good"));
    // A string value that is just the word, before the field.
    let value = br#"{"comment": "project", "project": "good"}"#;
    assert_eq!(from_body(value).as_deref(), Some("good"));
    let no_field =
        br#"{"sql": "select 1 as \"project\", 'project' from t", "acceptPartial": true}"#;
    assert_eq!(from_body(no_field), None);
    // Nested objects are skipped whole.
    let nested = br#"{"backdoorToggles": {"project": "nested"}, "sql": "x"}"#;
    assert_eq!(from_body(nested), None);
}

#[test]
fn a_body_cut_short_after_the_project_still_names_it() {
    let body = br#"{"project": "learn_kylin", "sql": "select * from a_very_long_"#;
    assert_eq!(from_body(body).as_deref(), Some("learn_kylin"));
    let before = br#"{"sql": "select * from a_very_long_"#;
    assert_eq!(from_body(before), None);
    // Borrowed unless escaped.
    assert!(matches!(
        from_body(br#"{"project":"p"}"#),
        Some(std::borrow::Cow::Borrowed("p"))
    ));
    assert_eq!(
        from_body(br#"{"project":"a\u0062"}"#).as_deref(),
        Some("ab")
    );
}

#[test]
fn query_and_path_projects_are_percent_decoded() {
    assert_eq!(
        from_query(Some("project=learn%5Fkylin")).as_deref(),
        Some("learn_kylin")
    );
    assert_eq!(from_query(Some("x=1&project=a+b")).as_deref(), Some("a b"));
    assert_eq!(from_query(Some("project=%zz")), None);
    assert_eq!(from_query(Some("projectName=a")), None);
    assert_eq!(
        from_path("/kylin/api/projects/a%2Fb", "/kylin/api").as_deref(),
        Some("a/b")
    );
    assert_eq!(from_path("/kylin/api/tables/p", "/kylin/api"), None);
    assert_eq!(from_path("/other/projects/p", "/kylin/api"), None);
}

#[test]
fn the_share_is_the_ceiling_of_the_limit_over_the_gateways() {
    assert_eq!(share(16, 1), 16);
    assert_eq!(share(16, 3), 6);
    assert_eq!(share(16, 16), 1);
    assert_eq!(share(2, 5), 1, "never 0");
    assert_eq!(share(100, 0), 100, "0 gateways counts as 1");
    assert_eq!(share(u64::MAX, 1), u64::MAX);
}

#[test]
fn the_token_bucket_gives_the_burst_then_the_rate() {
    let bucket = Bucket::default();
    let now = 5 * SECOND;
    for _ in 0..4 {
        assert_eq!(bucket.take(now, 2, 4), Ok(()));
    }
    // Empty: the next token comes after 1/rate.
    assert_eq!(bucket.take(now, 2, 4), Err(SECOND / 2));
    assert_eq!(bucket.take(now + SECOND / 2, 2, 4), Ok(()));
    assert!(bucket.take(now + SECOND / 2, 2, 4).is_err());
    // Refilled to the burst, never beyond it.
    let later = now + 60 * SECOND;
    for _ in 0..4 {
        assert_eq!(bucket.take(later, 2, 4), Ok(()));
    }
    assert!(bucket.take(later, 2, 4).is_err());
    assert_eq!(retry_after_s(1), 1);
    assert_eq!(retry_after_s(SECOND + 1), 2);
    assert_eq!(gcra(0, 0, 10, 1), Ok(SECOND / 10));
}

#[test]
fn max_concurrent_is_held_until_the_permit_is_dropped() {
    let (quotas, _) = manual(&limits(&[("a", concurrent(2))], None), 10);
    let first = quotas.admit("a").unwrap().expect("limited");
    let second = quotas.admit("a").unwrap().expect("limited");
    let refused = quotas.admit("a").err().expect("over max_concurrent");
    assert_eq!(refused.limit, LimitKind::MaxConcurrent);
    assert_eq!(
        (refused.allowed, refused.configured, refused.gateways),
        (2, 2, 1)
    );
    assert_eq!(&*refused.project, "a");
    // Another project, unlisted without a default, is not limited.
    assert!(quotas.admit("b").unwrap().is_none());
    drop(first);
    let third = quotas.admit("a").unwrap();
    assert!(third.is_some());
    drop((second, third));
    let status = quotas.status();
    assert_eq!(status["projects"][0]["in_flight"], 0);
    assert_eq!(status["projects"][0]["admitted"], 3);
    assert_eq!(status["projects"][0]["rejected"]["max_concurrent"], 1);
}

#[test]
fn the_fleet_share_follows_set_gateways() {
    let (quotas, now) = manual(
        &limits(&[("a", concurrent(4)), ("r", rate(10, 10))], None),
        10,
    );
    quotas.set_gateways(3);
    let held: Vec<_> = (0..2).map(|_| quotas.admit("a").unwrap()).collect();
    let refused = quotas.admit("a").err().expect("share of 4 over 3 is 2");
    assert_eq!(
        (refused.allowed, refused.configured, refused.gateways),
        (2, 4, 3)
    );
    quotas.set_gateways(1);
    assert!(quotas.admit("a").is_ok(), "back to 4 without a restart");
    drop(held);
    // Rate: burst 10 over 2 gateways is 5.
    quotas.set_gateways(2);
    for _ in 0..5 {
        assert!(quotas.admit("r").is_ok());
    }
    let refused = quotas.admit("r").err().expect("burst share spent");
    assert_eq!(refused.limit, LimitKind::RatePerS);
    assert_eq!((refused.allowed, refused.configured), (5, 10));
    assert_eq!(refused.retry_after_s, 1);
    now.fetch_add(SECOND / 5, Ordering::Relaxed);
    assert!(quotas.admit("r").is_ok(), "one token after 1/5 s");
    quotas.set_gateways(0);
    assert_eq!(quotas.gateways(), 1);
}

#[test]
fn a_rate_rejection_gives_back_the_concurrency_place() {
    let both = QuotaLimits {
        max_concurrent: Some(1),
        rate_per_s: Some(1),
        burst: Some(1),
    };
    let (quotas, _) = manual(&limits(&[("a", both)], None), 10);
    let first = quotas.admit("a").unwrap();
    drop(first);
    let refused = quotas.admit("a").err().expect("no token");
    assert_eq!(refused.limit, LimitKind::RatePerS);
    assert_eq!(quotas.status()["projects"][0]["in_flight"], 0);
}

#[test]
fn unlisted_projects_get_the_default_up_to_the_cap_then_share_one_entry() {
    let (quotas, _) = manual(&limits(&[], Some(concurrent(1))), 2);
    assert!(quotas.enabled());
    let a = quotas.admit("a").unwrap().expect("tracked");
    let b = quotas.admit("b").unwrap().expect("tracked");
    assert!(quotas.admit("a").is_err(), "a's own default quota");
    // Past the cap, c and d count together under the overflow entry.
    let c = quotas.admit("c").unwrap().expect("overflow entry");
    let refused = quotas.admit("d").err().expect("shares c's place");
    assert_eq!(&*refused.project, OVERFLOW_PROJECT);
    let status = quotas.status();
    assert_eq!(status["tracked_projects"], 2);
    assert_eq!(status["overflowed"], 2);
    let names: Vec<_> = status["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a", "b", OVERFLOW_PROJECT]);
    drop((a, b, c));
}

#[test]
fn without_quotas_nothing_is_limited() {
    let (quotas, _) = manual(&limits(&[], None), 10);
    assert!(!quotas.enabled());
    assert!(quotas.admit("a").unwrap().is_none());
}

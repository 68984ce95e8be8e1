use super::*;

fn classifier() -> Classifier {
    Classifier::new(Vec::new(), "/kylin/api")
}

fn class_of(method: &str, path: &str) -> TrafficClass {
    classifier().classify(&Method::from_bytes(method.as_bytes()).unwrap(), path)
}

#[test]
fn every_job_path_is_job_with_and_without_trailing_slash() {
    let jobs = [
        "PUT /cubes/c1/build",
        "PUT /cubes/c1/rebuild",
        "PUT /cubes/c1/build2",
        "PUT /cubes/c1/rebuild2",
        "PUT /cubes/c1/automerge",
        "PUT /cubes/c1/optimize",
        "PUT /cubes/c1/optimize2",
        "PUT /cubes/c1/refresh_lookup",
        "PUT /cubes/c1/purge",
        "PUT /cubes/c1/holes",
        "PUT /cubes/c1/init_start_offsets",
        "PUT /cubes/c1/enable",
        "PUT /cubes/c1/disable",
        "PUT /cubes/c1/clone",
        "PUT /cubes/c1/recover_segment_optimize/s1",
        "PUT /cubes/c1/segs/s1/refresh_lookup",
        "DELETE /cubes/c1/segs/s1",
        "DELETE /cubes/c1/segs2/7",
        "DELETE /cubes/c1",
        "GET /jobs",
        "GET /jobs/overview",
        "GET /jobs/abc-123",
        "GET /jobs/abc/steps/abc-00/output",
        "PUT /jobs/abc/resume",
        "PUT /jobs/abc/resubmit",
        "PUT /jobs/abc/cancel",
        "PUT /jobs/abc/pause",
        "PUT /jobs/abc/steps/abc-01/rollback",
        "DELETE /jobs/abc/drop",
        "PUT /tables/learn_kylin/DEFAULT.KYLIN_SALES/cardinality",
    ];
    for line in jobs {
        let (method, path) = line.split_once(' ').unwrap();
        for suffix in ["", "/"] {
            let full = format!("/kylin/api{path}{suffix}");
            assert_eq!(
                class_of(method, &full),
                TrafficClass::Job,
                "{method} {full}"
            );
        }
    }
}

#[test]
fn every_query_path_is_query_with_and_without_trailing_slash() {
    let queries = [
        "POST /query",
        "POST /query/prestate",
        "GET /tables_and_columns",
        "GET /saved_queries",
        "POST /saved_queries",
        "DELETE /saved_queries/q1",
        "GET /query/format/csv",
        "POST /query/format/csv",
        "GET /query/runningQueries",
        "PUT /query/q1/stop",
        "POST /async_query",
        "DELETE /async_query",
        "GET /async_query/q1/status",
        "GET /async_query/q1/result",
        "POST /sequence_sql/execution",
        "GET /sequence_sql/result/1",
    ];
    for line in queries {
        let (method, path) = line.split_once(' ').unwrap();
        for suffix in ["", "/"] {
            let full = format!("/kylin/api{path}{suffix}");
            assert_eq!(
                class_of(method, &full),
                TrafficClass::Query,
                "{method} {full}"
            );
        }
    }
}

/// Asserts `class` for every `METHOD /path` line (under `/kylin/api`, with
/// and without a trailing slash) with the rules of `generation`.
fn assert_all(generation: ApiGeneration, lines: &[&str], class: TrafficClass) {
    let classifier = Classifier::for_generation(Vec::new(), "/kylin/api", generation);
    for line in lines {
        let (method, path) = line.split_once(' ').unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        for suffix in ["", "/"] {
            let full = format!("/kylin/api{path}{suffix}");
            assert_eq!(
                classifier.classify(&method, &full),
                class,
                "{method} {full} ({generation:?})"
            );
        }
    }
}

/// Kylin 5's job-creating and job-control calls (branch `kylin5`).
const KYLIN5_JOBS: &[&str] = &[
    "POST /models/m1/segments",
    "PUT /models/m1/segments",
    "DELETE /models/m1/segments",
    "POST /models/m1/segments/completion",
    "POST /models/m1/indices",
    "POST /models/m1/indexes",
    "PUT /models/m1/model_segments",
    "POST /models/m1/model_segments/indexes",
    "POST /models/m1/model_segments/all_indexes",
    "POST /models/m1/model_segments/multi_partition",
    "PUT /cubes/c1/rebuild",
    "PUT /cubes/c1/segments",
    "POST /snapshots",
    "PUT /snapshots",
    "POST /tables/sampling_jobs",
    "PUT /jobs/status",
    "DELETE /jobs",
    "PUT /jobs/j1/resume",
    "GET /jobs",
    "GET /jobs/j1/detail",
    "GET /jobs/j1/steps/j1_00/output",
    "GET /jobs/statistics",
    "GET /jobs/statistics/count",
];

/// Kylin 5's synchronous and asynchronous queries.
const KYLIN5_QUERIES: &[&str] = &[
    "POST /query",
    "POST /query/prestate",
    "POST /async_query",
    "GET /async_query/q1/status",
    "GET /async_query/q1/file_status",
    "GET /async_query/q1/metadata",
    "GET /async_query/q1/result_download",
    "GET /async_query/q1/result_path",
    "DELETE /async_query/q1",
];

#[test]
fn every_kylin5_job_path_is_job() {
    assert_all(ApiGeneration::Kylin5, KYLIN5_JOBS, TrafficClass::Job);
    assert_all(ApiGeneration::Any, KYLIN5_JOBS, TrafficClass::Job);
}

#[test]
fn every_kylin5_query_path_is_query_in_every_generation() {
    for generation in [
        ApiGeneration::Kylin5,
        ApiGeneration::Kylin3,
        ApiGeneration::Any,
    ] {
        assert_all(generation, KYLIN5_QUERIES, TrafficClass::Query);
    }
}

/// `DELETE /models/{project}/{model}` is a Kylin 3.x metadata call; the
/// same shape is Kylin 5's segment deletion for a model.
#[test]
fn models_paths_are_job_calls_only_for_kylin5() {
    assert_all(
        ApiGeneration::Kylin3,
        &[
            "DELETE /models/learn_kylin/segments",
            "POST /models/m1/indices",
        ],
        TrafficClass::Other,
    );
    assert_all(
        ApiGeneration::Kylin5,
        &["DELETE /models/learn_kylin/segments"],
        TrafficClass::Job,
    );
    // Model metadata reads stay `other` everywhere.
    assert_all(
        ApiGeneration::Kylin5,
        &["GET /models/m1/segments", "GET /models"],
        TrafficClass::Other,
    );
}

#[test]
fn reads_and_ui_are_other() {
    for (method, path) in [
        ("GET", "/kylin/api/cubes"),
        ("GET", "/kylin/api/cubes/c1"),
        ("POST", "/kylin/api/user/authentication"),
        ("GET", "/kylin/"),
        ("GET", "/kylin/index.html"),
        ("GET", "/kylin/api/projects"),
        // Right path, wrong method: a cube build is a PUT.
        ("GET", "/kylin/api/cubes/c1/build"),
        ("GET", "/kylin/api/query"),
        // No base.
        ("POST", "/query"),
    ] {
        assert_eq!(
            class_of(method, path),
            TrafficClass::Other,
            "{method} {path}"
        );
    }
}

#[test]
fn operator_rules_override_builtins_in_order() {
    let rules = vec![
        Rule {
            methods: vec![Method::GET],
            path: PathPattern::parse("/kylin/api/jobs/**").unwrap(),
            class: TrafficClass::Other,
        },
        Rule {
            methods: vec![],
            path: PathPattern::parse("/kylin/api/jobs/{id}").unwrap(),
            class: TrafficClass::Query,
        },
    ];
    let classifier = Classifier::new(rules, "/kylin/api");
    assert_eq!(
        classifier.classify(&Method::GET, "/kylin/api/jobs/1"),
        TrafficClass::Other
    );
    assert_eq!(
        classifier.classify(&Method::GET, "/kylin/api/jobs"),
        TrafficClass::Other
    );
    assert_eq!(
        classifier.classify(&Method::PUT, "/kylin/api/jobs/1/cancel"),
        TrafficClass::Job
    );
}

#[test]
fn patterns_reject_bad_shapes() {
    assert_eq!(PathPattern::parse("kylin"), Err(PatternError::NotAbsolute));
    assert_eq!(
        PathPattern::parse("/a/**/b"),
        Err(PatternError::RestNotLast)
    );
    assert!(matches!(
        PathPattern::parse("/a/{b"),
        Err(PatternError::Braces(_))
    ));
}

#[test]
fn one_segment_wildcards_need_a_nonempty_segment() {
    let p = PathPattern::parse("/a/*/c").unwrap();
    assert!(p.matches("/a/b/c"));
    assert!(!p.matches("/a//c"));
    assert!(!p.matches("/a/b/c/d"));
    let rest = PathPattern::parse("/a/**").unwrap();
    assert!(rest.matches("/a"));
    assert!(rest.matches("/a/b/c"));
    assert!(!rest.matches("/ab"));
}

#[test]
fn only_reads_are_replay_safe() {
    let c = classifier();
    for (method, path, safe) in [
        ("GET", "/kylin/api/jobs", true),
        ("HEAD", "/kylin/", true),
        ("POST", "/kylin/api/query", true),
        ("POST", "/kylin/api/query/", true),
        ("POST", "/kylin/api/query/prestate", true),
        ("POST", "/kylin/api/saved_queries", false),
        ("DELETE", "/kylin/api/saved_queries/q1", false),
        ("POST", "/kylin/api/async_query", false),
        ("PUT", "/kylin/api/query/q1/stop", false),
        ("PUT", "/kylin/api/cubes/c1/build", false),
    ] {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        assert_eq!(c.replay_safe(&m, path), safe, "{method} {path}");
    }
}

#[test]
fn builtin_rules_start_with_a_literal_segment() {
    // The grouping by first segment relies on it.
    for (_, path, _) in COMMON.iter().chain(KYLIN5) {
        let first = first_segment(path);
        assert!(
            !first.is_empty() && !first.contains(['{', '*']),
            "{path} does not start with a literal segment"
        );
    }
}

#[test]
fn paths_outside_the_api_base_or_with_empty_segments_are_other() {
    for path in [
        "/kylin/index.html",
        "/kylin/apix/query",
        "/kylin/api",
        "/kylin/api/",
        "/kylin/api//query",
        "/query",
        "",
    ] {
        assert_eq!(class_of("POST", path), TrafficClass::Other, "{path}");
    }
}

#[test]
fn a_base_with_a_trailing_slash_or_none_at_all_still_groups_rules() {
    let method = Method::PUT;
    let slash = Classifier::new(Vec::new(), "/kylin/api/");
    assert_eq!(
        slash.classify(&method, "/kylin/api/cubes/c/build"),
        TrafficClass::Job
    );
    let root = Classifier::new(Vec::new(), "");
    assert_eq!(root.classify(&method, "/cubes/c/build"), TrafficClass::Job);
    assert_eq!(
        root.classify(&method, "/kylin/api/cubes/c/build"),
        TrafficClass::Other
    );
}

#[test]
fn class_index_is_the_position_in_all() {
    for (i, class) in TrafficClass::ALL.into_iter().enumerate() {
        assert_eq!(class.index(), i);
    }
}

/// The segment-by-segment match that `PathPattern::matches` speeds up by
/// comparing the leading literals as one string: the oracle.
fn matches_by_segments(pattern: &str, path: &str) -> bool {
    let pattern = pattern.strip_prefix('/').unwrap();
    let pattern = pattern.strip_suffix('/').unwrap_or(pattern);
    let segments: Vec<&str> = pattern.split('/').filter(|_| !pattern.is_empty()).collect();
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts = rest.split('/').filter(|_| !rest.is_empty());
    for segment in segments {
        match segment {
            "**" => return true,
            "*" => {
                if parts.next().is_none_or(str::is_empty) {
                    return false;
                }
            }
            literal => {
                if parts.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Any pattern and path of a few short segments (empty ones, prefixes
    /// of each other, wildcards, trailing slashes; paths often built from
    /// the pattern) match exactly when the segment-by-segment comparison
    /// says so.
    #[test]
    fn matching_literals_as_one_string_agrees_with_segment_by_segment(
        pattern in proptest::collection::vec(
            proptest::sample::select(vec!["a", "ab", "kylin", "api", "*", "query"]), 0..4),
        rest in proptest::bool::ANY,
        trailing in proptest::bool::ANY,
        from_pattern in proptest::bool::ANY,
        path in proptest::collection::vec(
            proptest::sample::select(vec!["a", "ab", "", "kylin", "api", "query", "b"]), 0..5),
        extra in proptest::collection::vec(
            proptest::sample::select(vec!["a", "", "x"]), 0..2),
        path_trailing in proptest::sample::select(vec!["", "/", "//"]),
        rooted in proptest::bool::ANY,
    ) {
        let mut text = format!("/{}", pattern.join("/"));
        if rest {
            text = format!("{}/**", text.trim_end_matches('/'));
        } else if trailing {
            text.push('/');
        }
        let mut segments: Vec<&str> = if from_pattern {
            pattern.iter().map(|s| if *s == "*" { "x" } else { s }).collect()
        } else {
            path
        };
        segments.extend(extra);
        let path = format!("{}{}{}", if rooted { "/" } else { "" }, segments.join("/"), path_trailing);
        let compiled = PathPattern::parse(&text).unwrap();
        proptest::prop_assert_eq!(
            compiled.matches(&path),
            matches_by_segments(&text, &path),
            "pattern {} path {}", text, path
        );
    }
}

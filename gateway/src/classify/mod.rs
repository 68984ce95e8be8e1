//! Traffic classification: which of `query`, `job` or `other` a request is.
//! Built-in rules come from Kylin's REST API (base `/kylin/api`); operator
//! rules from config are evaluated first, in order, and the first match wins.
//! Built-in rules are grouped by their first segment after the API base, so a
//! request is checked only against the few rules that could match it.
//!
//! Most rules hold for every Kylin generation (a path one generation does
//! not serve is never sent by its clients). Where a path means different
//! things, the rules are per [`ApiGeneration`]: Kylin 5's
//! `/models/{model}/segments` builds segments, but in Kylin 3.x
//! `DELETE /models/{project}/{model}` deletes a model's metadata (a model
//! named `segments` would be taken for a job call).

mod pattern;

pub use pattern::{PathPattern, PatternError};

use http::Method;

/// The traffic classes the router knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficClass {
    /// Served by any healthy node whose mode serves queries.
    Query,
    /// Sent to the elected job-engine leader.
    Job,
    /// Everything else (auth, metadata reads, the web UI): any query node.
    Other,
}

impl TrafficClass {
    pub const ALL: [TrafficClass; 3] =
        [TrafficClass::Query, TrafficClass::Job, TrafficClass::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            TrafficClass::Query => "query",
            TrafficClass::Job => "job",
            TrafficClass::Other => "other",
        }
    }

    /// Position in [`TrafficClass::ALL`], for per-class tables.
    pub fn index(self) -> usize {
        match self {
            TrafficClass::Query => 0,
            TrafficClass::Job => 1,
            TrafficClass::Other => 2,
        }
    }

    pub fn parse(text: &str) -> Option<TrafficClass> {
        match text {
            "query" => Some(TrafficClass::Query),
            "job" => Some(TrafficClass::Job),
            "other" => Some(TrafficClass::Other),
            _ => None,
        }
    }
}

impl std::fmt::Display for TrafficClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which Kylin generation's REST API the built-in rules follow, from the
/// discovery layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApiGeneration {
    /// KAP 2.4, Kylin 3.x and 4.0: the common rules only.
    Kylin3,
    /// Kylin 5: the common rules and Kylin 5's model/index job calls.
    Kylin5,
    /// Not known (`layout = "auto"`, static discovery): every rule; where
    /// generations differ Kylin 5's wins, which costs a 3.x cluster at most
    /// a metadata call sent to its leader (a leader serves any call).
    #[default]
    Any,
}

/// One rule: methods (empty = any) and a path pattern give a class.
#[derive(Clone, Debug)]
pub struct Rule {
    pub methods: Vec<Method>,
    pub path: PathPattern,
    pub class: TrafficClass,
}

impl Rule {
    fn matches(&self, method: &Method, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method)) && self.path.matches(path)
    }
}

/// Classifies requests: operator rules first, then Kylin's built-in ones.
#[derive(Clone, Debug)]
pub struct Classifier {
    operator_rules: Vec<Rule>,
    /// `api_base` without a trailing slash.
    base: String,
    /// Built-in rules by the literal segment that follows `base`, in table
    /// order within a group. Rules of different groups cannot match the same
    /// path, so first-match order is the same as checking them all in turn.
    builtin: Vec<(&'static str, Vec<Rule>)>,
    read_only_posts: Vec<PathPattern>,
}

impl Classifier {
    /// `operator_rules` take precedence over the built-in rules (of every
    /// generation) for Kylin's REST API rooted at `api_base` (normally
    /// `/kylin/api`).
    pub fn new(operator_rules: Vec<Rule>, api_base: &str) -> Classifier {
        Classifier::for_generation(operator_rules, api_base, ApiGeneration::Any)
    }

    /// Like [`Classifier::new`], with the built-in rules of `generation`.
    pub fn for_generation(
        operator_rules: Vec<Rule>,
        api_base: &str,
        generation: ApiGeneration,
    ) -> Classifier {
        let base = api_base.trim_end_matches('/');
        let read_only_posts = ["/query", "/query/prestate"]
            .iter()
            .map(|p| PathPattern::parse(&format!("{base}{p}")).expect("built-in pattern"))
            .collect();
        Classifier {
            operator_rules,
            base: base.to_string(),
            builtin: builtin_rules(base, generation),
            read_only_posts,
        }
    }

    /// Whether the request only reads, so sending it to a second node after
    /// the first failed mid-request cannot do anything twice: safe methods,
    /// and Kylin's query execution (`POST /query`, `/query/prestate`), whose
    /// POST carries SQL but changes nothing. Saved-query and async-query
    /// writes are `query` class too, but are not replay-safe.
    pub fn replay_safe(&self, method: &Method, path: &str) -> bool {
        matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            || (*method == Method::POST && self.read_only_posts.iter().any(|p| p.matches(path)))
    }

    pub fn classify(&self, method: &Method, path: &str) -> TrafficClass {
        let operator = self.operator_rules.iter();
        let builtin = self.builtin_candidates(path).iter();
        operator
            .chain(builtin)
            .find(|rule| rule.matches(method, path))
            .map_or(TrafficClass::Other, |rule| rule.class)
    }

    /// The built-in rules that may match `path`: those of the group named by
    /// the segment after the API base (none if the path is outside it).
    fn builtin_candidates(&self, path: &str) -> &[Rule] {
        let segment = path
            .strip_prefix(self.base.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .map(|rest| rest.split('/').next().unwrap_or(rest));
        segment
            .and_then(|segment| self.builtin.iter().find(|(first, _)| *first == segment))
            .map_or(&[], |(_, rules)| rules.as_slice())
    }
}

/// Kylin's job and query endpoints common to every generation (see
/// `../shared/kylin-zookeeper.md`). `{x}` matches one path segment, `**`
/// the rest of the path.
const COMMON: &[(&str, &str, TrafficClass)] = {
    use TrafficClass::{Job, Query};
    &[
        // Cube builds and segment management: the job engine schedules them.
        ("PUT", "/cubes/{cube}/build", Job),
        ("PUT", "/cubes/{cube}/rebuild", Job),
        ("PUT", "/cubes/{cube}/build2", Job),
        ("PUT", "/cubes/{cube}/rebuild2", Job),
        ("PUT", "/cubes/{cube}/automerge", Job),
        ("PUT", "/cubes/{cube}/optimize", Job),
        ("PUT", "/cubes/{cube}/optimize2", Job),
        ("PUT", "/cubes/{cube}/refresh_lookup", Job),
        ("PUT", "/cubes/{cube}/purge", Job),
        ("PUT", "/cubes/{cube}/holes", Job),
        ("PUT", "/cubes/{cube}/init_start_offsets", Job),
        ("PUT", "/cubes/{cube}/enable", Job),
        ("PUT", "/cubes/{cube}/disable", Job),
        ("PUT", "/cubes/{cube}/clone", Job),
        ("PUT", "/cubes/{cube}/recover_segment_optimize/{seg}", Job),
        ("PUT", "/cubes/{cube}/segs/{seg}/refresh_lookup", Job),
        ("DELETE", "/cubes/{cube}/segs/{seg}", Job),
        ("DELETE", "/cubes/{cube}/segs2/{id}", Job),
        ("DELETE", "/cubes/{cube}", Job),
        // Kylin 5's v2 (`application/vnd.apache.kylin-v2+json`) cube calls.
        ("PUT", "/cubes/{cube}/segments", Job),
        // Job inspection and actions.
        ("GET", "/jobs", Job),
        ("GET", "/jobs/overview", Job),
        ("GET", "/jobs/{id}", Job),
        ("GET", "/jobs/{id}/steps/{step}/output", Job),
        ("PUT", "/jobs/{id}/resume", Job),
        ("PUT", "/jobs/{id}/resubmit", Job),
        ("PUT", "/jobs/{id}/cancel", Job),
        ("PUT", "/jobs/{id}/pause", Job),
        ("PUT", "/jobs/{id}/steps/{step}/rollback", Job),
        ("DELETE", "/jobs/{id}/drop", Job),
        // Kylin 5's job control, details and statistics.
        ("PUT", "/jobs/status", Job),
        ("DELETE", "/jobs", Job),
        ("GET", "/jobs/{id}/detail", Job),
        ("GET", "/jobs/**", Job),
        ("PUT", "/tables/{project}/{tables}/cardinality", Job),
        // Kylin 5's table sampling and snapshot builds.
        ("POST", "/tables/sampling_jobs", Job),
        ("POST,PUT", "/snapshots", Job),
        // Queries.
        ("POST", "/query", Query),
        ("POST", "/query/prestate", Query),
        ("GET", "/tables_and_columns", Query),
        ("GET,POST,DELETE", "/saved_queries", Query),
        ("GET,POST,DELETE", "/saved_queries/**", Query),
        ("GET,POST", "/query/format/{fmt}", Query),
        ("GET", "/query/runningQueries", Query),
        ("PUT", "/query/{id}/stop", Query),
        // KAP's and Kylin 5's asynchronous queries, KAP's sequence queries.
        ("POST,DELETE", "/async_query", Query),
        ("GET", "/async_query/{id}/status", Query),
        ("GET", "/async_query/{id}/result", Query),
        ("GET", "/async_query/{id}/file_status", Query),
        ("GET", "/async_query/{id}/metadata", Query),
        ("GET", "/async_query/{id}/result_download", Query),
        ("GET", "/async_query/{id}/result_path", Query),
        ("DELETE", "/async_query/{id}", Query),
        ("", "/sequence_sql/**", Query),
    ]
};

/// Kylin 5's segment and index builds under `/models` (a 3.x model is
/// `/models/{project}/{model}`: not in the Kylin 3 rules).
const KYLIN5: &[(&str, &str, TrafficClass)] = {
    use TrafficClass::Job;
    &[
        ("POST,PUT,DELETE", "/models/{model}/segments", Job),
        ("POST", "/models/{model}/segments/completion", Job),
        ("POST", "/models/{model}/indices", Job),
        ("POST", "/models/{model}/indexes", Job),
        ("PUT", "/models/{model}/model_segments", Job),
        ("POST", "/models/{model}/model_segments/indexes", Job),
        ("POST", "/models/{model}/model_segments/all_indexes", Job),
        (
            "POST",
            "/models/{model}/model_segments/multi_partition",
            Job,
        ),
    ]
};

/// The built-in rules of `generation` under `base`, grouped by the first
/// segment of their path (always a literal in the tables).
fn builtin_rules(base: &str, generation: ApiGeneration) -> Vec<(&'static str, Vec<Rule>)> {
    let kylin5: &[_] = match generation {
        ApiGeneration::Kylin3 => &[],
        ApiGeneration::Kylin5 | ApiGeneration::Any => KYLIN5,
    };
    let mut groups: Vec<(&'static str, Vec<Rule>)> = Vec::new();
    for &(methods, path, class) in COMMON.iter().chain(kylin5) {
        let first = first_segment(path);
        let rule = Rule {
            methods: methods
                .split(',')
                .filter(|m| !m.is_empty())
                .map(|m| Method::from_bytes(m.as_bytes()).expect("built-in method"))
                .collect(),
            path: PathPattern::parse(&format!("{base}{path}")).expect("built-in pattern"),
            class,
        };
        match groups.iter_mut().find(|(name, _)| *name == first) {
            Some((_, rules)) => rules.push(rule),
            None => groups.push((first, vec![rule])),
        }
    }
    groups
}

/// `"/cubes/{cube}/build"` → `"cubes"`.
fn first_segment(path: &'static str) -> &'static str {
    let rest = path.trim_start_matches('/');
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests;

//! `maintenance-window`: during configured UTC windows (say, while HBase or
//! the metadata store is under maintenance), refuses new job submissions —
//! cube build, rebuild, merge, refresh — with 503 and a message that says
//! when to come back, and lets queries and job monitoring pass. The time
//! comes from the host (`request.now-unix-ms`), so the plugin needs no
//! clock of its own.
//!
//! Config (JSON):
//! `{"windows": [{"start": "22:00", "end": "02:00", "days": ["sat", "sun"]}],
//!   "message": "cube builds are paused for maintenance",
//!   "actions": ["build", "rebuild", ...]}` (default: every Kylin endpoint
//!   that submits a build, rebuild, merge, refresh or optimize job)
//! A window may cross midnight; `days` (optional, default every day) are
//! the UTC days the window starts on. `end` may be `24:00`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "routing-plugin",
});

use std::sync::OnceLock;

use kylin_gateway::plugin::types::{Rejection, Route, TrafficClass};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    windows: Vec<RawWindow>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    actions: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    start: String,
    end: String,
    #[serde(default)]
    days: Option<Vec<String>>,
}

/// A window in minutes of the UTC day; `days` is a bit set, Sunday = bit 0.
#[derive(Debug, PartialEq)]
struct Window {
    start: u32,
    end: u32,
    days: u8,
    label: String,
}

struct Config {
    windows: Vec<Window>,
    message: String,
    actions: Vec<String>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Last path segments of Kylin's job-submitting endpoints (`PUT
/// /kylin/api/cubes/{cube}/...`). Merge and refresh are `rebuild` with
/// `buildType` MERGE / REFRESH in the body; `merge` and `refresh` cover
/// KAP-style paths.
const DEFAULT_ACTIONS: [&str; 10] = [
    "build",
    "build2",
    "rebuild",
    "rebuild2",
    "automerge",
    "optimize",
    "optimize2",
    "refresh_lookup",
    "merge",
    "refresh",
];

const MINUTES_PER_DAY: u32 = 24 * 60;
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct MaintenanceWindow;

impl Guest for MaintenanceWindow {
    fn init(config: String) -> Result<(), String> {
        let config =
            parse_config(&config).map_err(|e| format!("maintenance-window config: {e}"))?;
        CONFIG
            .set(config)
            .map_err(|_| "init called twice".to_string())
    }

    fn needs() -> Needs {
        Needs {
            classes: vec![TrafficClass::Job],
            body_prefix_len: 0,
            headers: false,
        }
    }

    fn view_changed(_view: View) {}

    fn route(request: Request, _load: ViewLoad) -> Decision {
        let config = CONFIG.get().expect("init ran");
        let pass = Decision {
            route: Route::Default,
            add_headers: Vec::new(),
        };
        if !is_submission(&request, &config.actions) {
            return pass;
        }
        match active_window(&config.windows, request.now_unix_ms) {
            Some(window) => Decision {
                route: Route::Reject(Rejection {
                    status: 503,
                    message: format!(
                        "{} (maintenance window {} UTC); retry after it ends\n",
                        config.message, window.label
                    ),
                }),
                add_headers: Vec::new(),
            },
            None => pass,
        }
    }
}

fn parse_config(text: &str) -> Result<Config, String> {
    let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let windows = raw
        .windows
        .iter()
        .enumerate()
        .map(|(i, w)| parse_window(w).map_err(|e| format!("windows[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Config {
        windows,
        message: raw
            .message
            .unwrap_or_else(|| "job submissions are paused for maintenance".into()),
        actions: raw
            .actions
            .unwrap_or_else(|| DEFAULT_ACTIONS.map(String::from).to_vec()),
    })
}

fn parse_window(raw: &RawWindow) -> Result<Window, String> {
    let start = parse_hhmm(&raw.start)?;
    let end = parse_hhmm(&raw.end)?;
    if start == end {
        return Err("start and end are equal".into());
    }
    let days = match &raw.days {
        None => 0x7f,
        Some(days) => days.iter().try_fold(0u8, |set, day| {
            let day = day.to_ascii_lowercase();
            DAY_NAMES
                .iter()
                .position(|d| day.starts_with(d))
                .map(|i| set | 1 << i)
                .ok_or_else(|| format!("unknown day {day:?}"))
        })?,
    };
    Ok(Window {
        start,
        end,
        days,
        label: format!("{}-{}", raw.start, raw.end),
    })
}

/// `HH:MM` → minutes since midnight; `24:00` allowed as an end.
fn parse_hhmm(text: &str) -> Result<u32, String> {
    let bad = || format!("time {text:?} is not HH:MM");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// A job submission: PUT or POST whose last path segment is an action.
fn is_submission(request: &Request, actions: &[String]) -> bool {
    (request.method == "PUT" || request.method == "POST")
        && request
            .path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .is_some_and(|last| actions.iter().any(|a| a == last))
}

/// The window `now` falls in, if any.
fn active_window(windows: &[Window], now_unix_ms: u64) -> Option<&Window> {
    let minutes = now_unix_ms / 60_000;
    let day = minutes / u64::from(MINUTES_PER_DAY);
    let minute = (minutes % u64::from(MINUTES_PER_DAY)) as u32;
    // 1970-01-01 was a Thursday (bit 4).
    let weekday = ((day + 4) % 7) as u8;
    let yesterday = (weekday + 6) % 7;
    windows.iter().find(|w| {
        let on = |d: u8| w.days & (1 << d) != 0;
        if w.start < w.end {
            on(weekday) && (w.start..w.end).contains(&minute)
        } else {
            // Crosses midnight: the evening part today, the morning part of
            // a window that started yesterday.
            (on(weekday) && minute >= w.start) || (on(yesterday) && minute < w.end)
        }
    })
}

export!(MaintenanceWindow);

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    /// 2026-11-27 00:00 UTC, a Friday.
    const FRIDAY: u64 = 20_784 * 24 * 60 * MIN;

    fn window(start: &str, end: &str, days: Option<&[&str]>) -> Window {
        parse_window(&RawWindow {
            start: start.into(),
            end: end.into(),
            days: days.map(|d| d.iter().map(|s| s.to_string()).collect()),
        })
        .unwrap()
    }

    #[test]
    fn windows_cross_midnight_on_their_start_day() {
        let w = [window("22:00", "02:00", Some(&["fri"]))];
        assert!(active_window(&w, FRIDAY + 23 * 60 * MIN).is_some());
        assert!(active_window(&w, FRIDAY + 24 * 60 * MIN + 60 * MIN).is_some()); // Sat 01:00
        assert!(active_window(&w, FRIDAY + 60 * MIN).is_none()); // Fri 01:00: Thu not listed
        assert!(active_window(&w, FRIDAY + 12 * 60 * MIN).is_none());
    }

    #[test]
    fn bad_times_are_refused() {
        assert!(parse_hhmm("25:00").is_err());
        assert!(parse_hhmm("7").is_err());
        assert_eq!(parse_hhmm("24:00"), Ok(1440));
    }
}

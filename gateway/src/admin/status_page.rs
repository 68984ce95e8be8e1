//! The live status page: static HTML, CSS and a small script embedded in
//! the binary (no build step, nothing fetched from elsewhere), which polls
//! the admin API's JSON endpoints once a second. The files carry no data,
//! so they are served without the admin token; with a token configured the
//! script asks for it on the first `401`, keeps it in the tab's
//! `sessionStorage` and sends it as `Authorization: Bearer`.

/// One embedded file: its path on the admin listener, content type, body.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("status/index.html"),
};
const CSS: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_str!("status/status.css"),
};
const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("status/status.js"),
};

/// The asset served at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    match path {
        "/" | "/status" => Some(&INDEX),
        "/status.css" => Some(&CSS),
        "/status.js" => Some(&SCRIPT),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_own_css_and_script_only() {
        let index = asset("/").unwrap().body;
        assert!(index.contains(r#"href="/status.css""#));
        assert!(index.contains(r#"src="/status.js""#));
        assert!(!index.contains("http://") && !index.contains("https://"));
        assert!(
            asset("/status.js")
                .unwrap()
                .body
                .contains("setInterval(poll, 1000)")
        );
        assert!(asset("/nope").is_none());
    }

    #[test]
    fn the_script_never_parses_data_as_html() {
        let script = asset("/status.js").unwrap().body;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!script.contains(sink), "status.js uses {sink}");
        }
    }
}

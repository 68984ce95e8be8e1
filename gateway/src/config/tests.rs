use super::*;

const MINIMAL: &str = r#"
[listen]
http = "127.0.0.1:7070"
admin = "127.0.0.1:7071"
[discovery]
kind = "static"
[[discovery.nodes]]
address = "127.0.0.1:7081"
mode = "all"          # all | job | query, or a comma list
leader = true
"#;

fn error_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn minimal_static_shape_parses_with_defaults() {
    let config = parse(MINIMAL).unwrap();
    let Discovery::Static(d) = &config.discovery else {
        panic!("static")
    };
    assert_eq!(d.nodes.len(), 1);
    assert!(d.nodes[0].leader);
    assert_eq!(d.nodes[0].modes, Modes::ALL);
    assert_eq!(config.routing.balance, BalanceKind::PowerOfTwoChoices);
    assert_eq!(config.routing.job_hold, Duration::from_secs(15));
    assert_eq!(config.routing.session_cookie, "JSESSIONID");
    assert_eq!(config.upstream.retries, 2);
}

#[test]
fn errors_name_the_key_and_the_problem_in_one_line() {
    let cases = [
        ("[listen]\nhttpx = \"x\"\n", "listen.httpx: unknown field"),
        (
            "[listen]\nhttp = \"nope\"\n",
            "listen.http: 'nope' is not an IP:port address",
        ),
        (
            "[[discovery.nodes]]\naddress = \"a:1\"\nmode = \"bogus\"\n",
            "discovery.nodes[0].mode: unknown mode 'bogus'",
        ),
        (
            "[[discovery.nodes]]\naddress = \"a:1\"\nmode = \"query\"\nleader = true\n",
            "discovery.nodes[0].leader: a query-only node cannot lead",
        ),
        (
            "[[discovery.nodes]]\naddress = \"a\"\n",
            "discovery.nodes[0].address: 'a' is not host:port",
        ),
        (
            "[[discovery.nodes]]\naddress = \"a:0\"\n",
            "discovery.nodes[0].address: 'a:0' is not host:port",
        ),
        (
            "[[discovery.nodes]]\naddress = \"a:1\"\n[discovery.address_map]\n\"k:7070\" = \"10.0.0.1:0\"\n",
            "discovery.address_map.\"k:7070\": '10.0.0.1:0' is not host or host:port",
        ),
        (
            "[[discovery.nodes]]\naddress = \"a:1\"\n[discovery.address_map]\n\"k\" = \"\"\n",
            "discovery.address_map.\"k\": '' is not host or host:port",
        ),
        (
            "[discovery]\nkind = \"etcd\"\n",
            "discovery.kind: unknown kind 'etcd'",
        ),
        (
            "[discovery]\nkind = \"zookeeper\"\n",
            "discovery.connect: zookeeper discovery needs",
        ),
        (
            "[discovery]\nkind = \"zookeeper\"\nconnect = \"h:2181\"\nlayout = \"kylin-9\"\n",
            "discovery.layout: unknown layout 'kylin-9'",
        ),
        (
            "[routing]\njob_hold_ms = \"x\"\n",
            "routing.job_hold_ms: invalid type",
        ),
        (
            "[upstream]\nreplay_response_bytes = 999999999\n",
            "upstream.replay_response_bytes: 999999999 is more than 16777216",
        ),
        (
            "[routing]\nbalance = \"consistent-hash\"\n",
            "routing.hash_key: consistent-hash needs a key",
        ),
        (
            "[routing]\nhash_key = \"body:x\"\n",
            "routing.hash_key: 'body:x' is not",
        ),
        (
            "[[routing.rules]]\npath = \"/a\"\nclass = \"batch\"\n",
            "routing.rules[0].class: unknown class 'batch'",
        ),
        (
            "[[routing.rules]]\npath = \"a\"\nclass = \"job\"\n",
            "routing.rules[0].path: a path pattern must start",
        ),
        ("[listen\n", "(syntax): "),
        (
            "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\non_error = \"explode\"\n",
            "plugins[0].on_error: unknown value 'explode'",
        ),
    ];
    for (text, expected) in cases {
        // Sections other than discovery get a valid node list, so the error
        // is about the key under test.
        let text = if text.contains("discovery") {
            text.to_string()
        } else {
            format!("{text}\n[[discovery.nodes]]\naddress = \"a:1\"\n")
        };
        let message = error_of(&text);
        assert!(
            message.starts_with(expected),
            "for {text:?} got {message:?}"
        );
        assert!(!message.contains('\n'), "one line: {message:?}");
    }
}

#[test]
fn zookeeper_settings_from_connect_string_and_prefix() {
    let config = parse(
        "[discovery]\nkind = \"zookeeper\"\nconnect = \"127.0.0.1:2181,127.0.0.1:2182/some/root\"\nmetadata_prefix = \"kylin_metadata@hbase\"\n",
    )
    .unwrap();
    let Discovery::Zookeeper(z) = config.discovery else {
        panic!("zookeeper")
    };
    assert_eq!(z.hosts, "127.0.0.1:2181,127.0.0.1:2182");
    assert_eq!(z.chroot.as_deref(), Some("/some/root"));
    assert_eq!(z.base_path, "/kylin/kylin_metadata");
    assert_eq!(z.layout, Layout::Auto);
    assert_eq!(z.removal_grace, Duration::from_millis(250), "the default");
}

#[test]
fn removal_grace_is_bounded() {
    let zk = "[discovery]\nkind = \"zookeeper\"\nconnect = \"127.0.0.1:2181\"\n";
    let grace = |ms: u64| -> Result<Duration, String> {
        match parse(&format!("{zk}removal_grace_ms = {ms}\n")) {
            Ok(Config {
                discovery: Discovery::Zookeeper(z),
                ..
            }) => Ok(z.removal_grace),
            Ok(_) => panic!("zookeeper"),
            Err(e) => Err(e.to_string()),
        }
    };
    assert_eq!(grace(0), Ok(Duration::ZERO), "0 removes at once");
    assert_eq!(grace(10_000), Ok(Duration::from_secs(10)));
    let error = grace(10_001).unwrap_err();
    assert!(
        error.contains("discovery.removal_grace_ms: must be at most 10000 ms, got 10001"),
        "{error}"
    );
}

#[test]
fn kylin_properties_fill_connect_base_path_and_auth() {
    let props = kylin_properties::parse(
        "# comment\nkylin.env.zookeeper-connect-string=zk1:2181,zk2:2181/kroot\nkylin.metadata.url = prod_meta@hbase\n\
         kylin.env.zookeeper.zk-auth=digest:kylin:secret\nkylin.long=a\\\n  b\n",
    );
    assert_eq!(props["kylin.long"], "ab");
    let config =
        parse("[discovery]\nkind = \"zookeeper\"\nkylin_properties = \"/etc/kylin.properties\"\n")
            .unwrap();
    let Discovery::Zookeeper(mut z) = config.discovery else {
        panic!("zookeeper")
    };
    kylin_properties::apply(&mut z, &props).unwrap();
    assert_eq!(z.hosts, "zk1:2181,zk2:2181");
    assert_eq!(z.chroot.as_deref(), Some("/kroot"));
    assert_eq!(z.base_path, "/kylin/prod_meta");
    assert_eq!(z.digest_auth.as_deref(), Some("kylin:secret"));
    assert!(
        !format!("{z:?}").contains("secret"),
        "credentials must not reach logs"
    );
    assert_eq!(
        kylin_properties::metadata_prefix("hdfs:///a/b/kap_meta@hdfs"),
        "kap_meta"
    );
    assert_eq!(kylin_properties::metadata_prefix(""), "kylin_metadata");
}

#[test]
fn kylin5_unique_id_matches_kylin_for_postgresql_and_mysql() {
    use kylin_properties::metadata_url_unique_id as unique_id;
    assert_eq!(
        unique_id(
            "kylin_metadata@jdbc,driverClassName=org.postgresql.Driver,url=jdbc:postgresql://localhost:5432/kylin,username=postgres"
        ),
        "kylin_metadata_jdbc_postgresql___localhost_5432_kylin"
    );
    // MySQL, with a query string (cut at '?') and a password holding '@'.
    assert_eq!(
        unique_id(
            "kylin_metadata@jdbc,driverClassName=com.mysql.jdbc.Driver,url=jdbc:mysql://10.1.2.3:3306/kylin?useUnicode=true&characterEncoding=utf8,username=root,password=p@ss"
        ),
        "kylin_metadata_jdbc_mysql___10_1_2_3_3306_kylin"
    );
    // A quoted MySQL host list: its commas do not split the URL.
    assert_eq!(
        unique_id(
            "k5@jdbc,url=\"jdbc:mysql:loadbalance://h1:3306,h2:3306/kylin?x=1\",username=root"
        ),
        "k5_jdbc_mysql_loadbalance___h1_3306_h2_3306_kylin"
    );
    // No url parameter: the identifier alone (non-word characters replaced).
    assert_eq!(unique_id("my-meta@hdfs"), "my_meta");
    assert_eq!(unique_id(""), "kylin_metadata");
}

#[test]
fn the_metadata_identifier_ignores_at_signs_in_parameters() {
    let kylin4 = "kylin_metadata@jdbc,url=jdbc:mysql://db:3306/kylin,username=kylin,password=a@b/c";
    assert_eq!(
        kylin_properties::metadata_identifier(kylin4),
        "kylin_metadata"
    );
    assert_eq!(kylin_properties::metadata_prefix(kylin4), "kylin_metadata");
    assert_eq!(
        kylin_properties::metadata_parameter(kylin4, "password"),
        Some("a@b/c")
    );
    assert_eq!(
        kylin_properties::metadata_identifier("@jdbc,url=x"),
        "kylin_metadata"
    );
}

/// With a JDBC metadata URL the two generations live apart: Kylin 4.0
/// under `/kylin/<identifier>`, Kylin 5 under `/kylin/<unique id>`; both
/// are filled in so `layout = "auto"` reads either.
#[test]
fn kylin_properties_fill_both_base_paths() {
    let props = kylin_properties::parse(
        "kylin.env.zookeeper-connect-string=zk1:2181\n\
         kylin.metadata.url=kylin_metadata@jdbc,driverClassName=org.postgresql.Driver,url=jdbc:postgresql://pg:5432/kylin?ssl=true,username=postgres\n",
    );
    let zookeeper = |extra: &str| {
        let text = format!("[discovery]\nkind = \"zookeeper\"\nkylin_properties = \"/k\"\n{extra}");
        let Discovery::Zookeeper(mut z) = parse(&text).unwrap().discovery else {
            panic!("zookeeper")
        };
        kylin_properties::apply(&mut z, &props).unwrap();
        z
    };
    let z = zookeeper("");
    assert_eq!(z.base_path, "/kylin/kylin_metadata");
    assert_eq!(
        z.kylin5_base_path,
        "/kylin/kylin_metadata_jdbc_postgresql___pg_5432_kylin"
    );
    let z = zookeeper("layout = \"kylin-5\"\nbase_path = \"/kylin/mine\"\n");
    assert_eq!(z.layout, Layout::Kylin5);
    assert_eq!(
        z.kylin5_base_path, "/kylin/mine",
        "an explicit base path wins"
    );
    let z = zookeeper("kylin5_base_path = \"/kylin/k5\"\n");
    assert_eq!(z.kylin5_base_path, "/kylin/k5");
    assert_eq!(z.base_path, "/kylin/kylin_metadata");
}

#[test]
fn kylin5_base_path_needs_a_layout_that_reads_it() {
    let error = parse(
        "[discovery]\nkind = \"zookeeper\"\nconnect = \"zk:2181\"\nlayout = \"kylin-3.1\"\nkylin5_base_path = \"/kylin/x\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("discovery.kylin5_base_path: only valid with layout"),
        "{error}"
    );
    let error = parse(
        "[discovery]\nkind = \"zookeeper\"\nconnect = \"zk:2181\"\nkylin5_base_path = \"k\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("must start with '/'"), "{error}");
}

/// The effective config printed by `check-config` uses the input's keys, so
/// it parses back to the same config.
#[test]
fn effective_config_round_trips_with_the_input_keys() {
    let full = r#"
[listen]
http = "127.0.0.1:7070"
https = "127.0.0.1:7443"
admin = "127.0.0.1:7071"
[tls]
cert = "/etc/kgw/cert.pem"
key = "/etc/kgw/key.pem"
[discovery]
kind = "zookeeper"
connect = "zk1:2181,zk2:2181/chroot"
metadata_prefix = "kylin_metadata"
session_timeout_ms = 12000
default_mode = "query"
[discovery.address_map]
"kylin1:7070" = "10.0.0.1:7070"
[routing]
balance = "consistent-hash"
hash_key = "query:project"
job_hold_ms = 2500
[[routing.rules]]
methods = ["post"]
path = "/kylin/api/custom/**"
class = "job"
[upstream]
connect_timeout_ms = 250
retries = 1
[health]
eject_after = 5
[shutdown]
drain_timeout_ms = 1234
[[plugins]]
name = "p"
path = "/p.wasm"
[plugin_runtime]
deadline_ms = 3
memory_mb = 32
"#;
    for text in [MINIMAL, full] {
        let printed = toml::to_string_pretty(&parse(text).unwrap()).unwrap();
        let again = parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(toml::to_string_pretty(&again).unwrap(), printed);
    }
    let printed = toml::to_string_pretty(&parse(full).unwrap()).unwrap();
    for key in [
        "job_hold_ms = 2500",
        "drain_timeout_ms = 1234",
        "connect_timeout_ms = 250",
        "memory_mb = 32",
        "deadline_ms = 3",
        "connect = \"zk1:2181,zk2:2181/chroot\"",
        "session_timeout_ms = 12000",
        "path = \"/kylin/api/custom/**\"",
        "hash_key = \"query:project\"",
    ] {
        assert!(printed.contains(key), "missing {key:?} in\n{printed}");
    }
}

#[test]
fn limits_and_admin_have_defaults_and_reject_zero() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.limits.max_connections, 10_000);
    assert_eq!(config.limits.max_in_flight, 10_000);
    assert!(config.admin.public_metrics);
    assert!(config.admin.token_file.is_none());
    for (line, key) in [
        (
            "header_read_timeout_ms = 0",
            "limits.header_read_timeout_ms",
        ),
        ("idle_timeout_ms = 0", "limits.idle_timeout_ms"),
        ("max_connections = 0", "limits.max_connections"),
        ("max_in_flight = 0", "limits.max_in_flight"),
        ("max_in_flight = -1", "limits.max_in_flight"),
    ] {
        let error = error_of(&format!("{MINIMAL}[limits]\n{line}\n"));
        assert!(error.starts_with(key), "{line}: {error}");
    }
}

#[test]
fn tls_defaults_and_pairs_put_the_default_first() {
    let config = parse(&format!(
        "{MINIMAL}[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n[[tls.certs]]\ncert = \"/a.pem\"\nkey = \"/a.key\"\nnames = [\"Kylin.Example.com\", \"*.apps.example.com\"]\n"
    ))
    .unwrap();
    let tls = config.tls.unwrap();
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert!(tls.watch_files);
    assert!(tls.client_ca.is_none());
    let pairs = tls.pairs();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].key, "tls");
    assert_eq!(pairs[1].key, "tls.certs[0]");
    assert_eq!(
        pairs[1].files.names.as_deref(),
        Some(
            &[
                "kylin.example.com".to_string(),
                "*.apps.example.com".to_string()
            ][..]
        )
    );
    // Only [[tls.certs]]: the first is the default.
    let only = parse(&format!(
        "{MINIMAL}[tls]\nmin_version = \"1.3\"\n[[tls.certs]]\ncert = \"/a.pem\"\nkey = \"/a.key\"\n"
    ))
    .unwrap()
    .tls
    .unwrap();
    assert_eq!(only.min_version, TlsVersion::Tls13);
    assert_eq!(only.pairs()[0].key, "tls.certs[0]");
    assert!(
        config.upstream.tls_ca.is_none() && !config.upstream.tls && !config.upstream.tls_insecure
    );
}

#[test]
fn tls_errors_name_the_key() {
    for (text, key) in [
        ("[tls]\ncert = \"/c\"\n", "tls.key: required with tls.cert"),
        ("[tls]\nkey = \"/k\"\n", "tls.cert: required with tls.key"),
        (
            "[tls]\nclient_ca = \"/ca\"\n",
            "tls.cert: [tls] needs cert and key",
        ),
        (
            "[tls]\ncert = \"/c\"\nkey = \"/k\"\nmin_version = \"1.0\"\n",
            "tls.min_version: unknown version '1.0'",
        ),
        (
            "[tls]\n[[tls.certs]]\ncert = \"/c\"\nkey = \"/k\"\nnames = [\"a.test\", \"*.com\"]\n",
            "tls.certs[0].names[1]: '*.com' is not a DNS name",
        ),
        (
            "[tls]\n[[tls.certs]]\ncert = \"/c\"\nkey = \"/k\"\nnames = []\n",
            "tls.certs[0].names: must name at least one host",
        ),
        (
            "[tls]\n[[tls.certs]]\ncert = \"/c\"\n",
            "tls.certs[0]: missing field `key`",
        ),
        (
            "[upstream]\ntls_ca = \"/ca\"\ntls_insecure = true\n",
            "upstream.tls_insecure: set tls_ca",
        ),
        (
            "[[discovery.nodes]]\naddress = \"a:1\"\nssl_port = 0\n",
            "discovery.nodes[1].ssl_port: must be a port",
        ),
    ] {
        let error = error_of(&format!("{MINIMAL}{text}"));
        assert!(error.starts_with(key), "{text}: {error}");
    }
}

#[test]
fn tls_settings_round_trip_through_the_printed_config() {
    let text = format!(
        "{MINIMAL}[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nclient_ca = \"/ca.pem\"\nmin_version = \"1.3\"\nwatch_files = false\n[[tls.certs]]\ncert = \"/a.pem\"\nkey = \"/a.key\"\nnames = [\"a.test\"]\n[upstream]\ntls = true\ntls_ca = \"/kylin-ca.pem\"\n"
    );
    let printed = toml::to_string_pretty(&parse(&text).unwrap()).unwrap();
    let again = parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(toml::to_string_pretty(&again).unwrap(), printed);
    for key in [
        "min_version = \"1.3\"",
        "client_ca = \"/ca.pem\"",
        "tls_ca = \"/kylin-ca.pem\"",
        "names = [\"a.test\"]",
    ] {
        assert!(printed.contains(key), "missing {key:?} in\n{printed}");
    }
}

#[test]
fn the_runtime_shape_is_checked_and_round_trips() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.runtime.kind, RuntimeKind::CurrentThread);
    assert_eq!(config.runtime.threads, 0);
    let text = format!("{MINIMAL}[runtime]\nkind = \"multi-thread\"\nthreads = 3\n");
    let config = parse(&text).unwrap();
    assert_eq!(config.runtime.kind, RuntimeKind::MultiThread);
    let printed = toml::to_string_pretty(&config).unwrap();
    assert!(printed.contains("kind = \"multi-thread\""), "{printed}");
    let again = parse(&printed).unwrap().runtime;
    assert_eq!((again.kind, again.threads), (RuntimeKind::MultiThread, 3));

    let error = error_of(&format!("{MINIMAL}[runtime]\nkind = \"fibers\"\n"));
    assert!(error.starts_with("runtime.kind"), "{error}");
    let error = error_of(&format!(
        "{MINIMAL}[runtime]\nkind = \"current-thread\"\nthreads = 4096\n"
    ));
    assert!(error.starts_with("runtime.threads"), "{error}");
}

#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let text = r#"
[listen]
http = "127.0.0.1:7070"
https = "127.0.0.1:7443"
admin = "127.0.0.1:7071"
[tls]
cert = "certs/default.pem"
key = "/etc/kylin-gateway/default.key"
client_ca = "clients.pem"
[[tls.certs]]
cert = "sni.pem"
key = "sni.key"
[admin]
token_file = "admin-token"
[upstream]
tls_ca = "../ca.pem"
[[discovery.nodes]]
address = "127.0.0.1:7081"
[[plugins]]
name = "affinity"
path = "plugins/affinity.wasm"
[plugin_runtime]
cache_dir = "cache"
"#;
    let mut config = parse(text).unwrap();
    config.resolve_paths(Path::new("/srv/gw"));
    let tls = config.tls.as_ref().unwrap();
    assert_eq!(
        tls.cert.as_deref(),
        Some(Path::new("/srv/gw/certs/default.pem"))
    );
    assert_eq!(
        tls.key.as_deref(),
        Some(Path::new("/etc/kylin-gateway/default.key"))
    );
    assert_eq!(
        tls.client_ca.as_deref(),
        Some(Path::new("/srv/gw/clients.pem"))
    );
    assert_eq!(tls.certs[0].cert, Path::new("/srv/gw/sni.pem"));
    assert_eq!(tls.certs[0].key, Path::new("/srv/gw/sni.key"));
    assert_eq!(
        config.admin.token_file.as_deref(),
        Some(Path::new("/srv/gw/admin-token"))
    );
    assert_eq!(
        config.upstream.tls_ca.as_deref(),
        Some(Path::new("/srv/gw/../ca.pem"))
    );
    assert_eq!(
        config.plugins[0].path(),
        Some(Path::new("/srv/gw/plugins/affinity.wasm"))
    );
    assert_eq!(
        config.plugin_runtime.cache_dir.as_deref(),
        Some(Path::new("/srv/gw/cache"))
    );

    let mut zk = parse(
        "[discovery]\nkind = \"zookeeper\"\nconnect = \"h:2181\"\nkylin_properties = \"conf/kylin.properties\"\n",
    )
    .unwrap();
    zk.resolve_paths(Path::new("/srv/gw"));
    let Discovery::Zookeeper(settings) = &zk.discovery else {
        panic!("zookeeper")
    };
    assert_eq!(
        settings.kylin_properties.as_deref(),
        Some(Path::new("/srv/gw/conf/kylin.properties"))
    );
}

#[test]
fn kylin_properties_from_the_command_line_stand_in_for_the_files() {
    let zk = "[discovery]\nkind = \"zookeeper\"\n";
    assert!(
        parse(zk).is_err(),
        "no connect string and no kylin.properties"
    );
    let config =
        parse_with_kylin_properties(zk, Some(Path::new("/opt/kylin/conf/kylin.properties")))
            .unwrap();
    let Discovery::Zookeeper(settings) = &config.discovery else {
        panic!("zookeeper")
    };
    assert_eq!(
        settings.kylin_properties.as_deref(),
        Some(Path::new("/opt/kylin/conf/kylin.properties"))
    );
    // Static discovery has no use for it, and is not refused for it.
    assert!(parse_with_kylin_properties(MINIMAL, Some(Path::new("/x"))).is_ok());
}

#[test]
fn project_quotas_default_burst_to_the_rate_and_round_trip() {
    let text = format!(
        "{MINIMAL}[limits.project_default]\nmax_concurrent = 4\n\
         [[limits.projects]]\nname = \"learn_kylin\"\nmax_concurrent = 16\nrate_per_s = 100\nburst = 200\n\
         [[limits.projects]]\nname = \"adhoc\"\nrate_per_s = 5\n"
    );
    let config = parse(&text).unwrap();
    let quota = |max_concurrent, rate_per_s, burst| QuotaLimits {
        max_concurrent,
        rate_per_s,
        burst,
    };
    assert_eq!(
        config.limits.project_default,
        Some(quota(Some(4), None, None))
    );
    assert_eq!(config.limits.projects[0].name, "learn_kylin");
    assert_eq!(
        config.limits.projects[0].limits,
        quota(Some(16), Some(100), Some(200))
    );
    assert_eq!(
        config.limits.projects[1].limits,
        quota(None, Some(5), Some(5))
    );
    let printed = toml::to_string_pretty(&config).unwrap();
    let again = parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(again.limits.projects, config.limits.projects);
    assert_eq!(again.limits.project_default, config.limits.project_default);
    for key in [
        "[limits.project_default]",
        "[[limits.projects]]",
        "burst = 200",
    ] {
        assert!(printed.contains(key), "missing {key:?} in\n{printed}");
    }
    // No quotas: nothing printed for them beyond an empty list.
    let none = parse(MINIMAL).unwrap();
    assert!(none.limits.projects.is_empty());
    assert!(none.limits.project_default.is_none());
}

#[test]
fn project_quota_errors_name_the_key() {
    let named =
        |name: &str, fields: &str| format!("[[limits.projects]]\nname = \"{name}\"\n{fields}\n");
    let project = |fields: &str| named("a", fields);
    for (extra, expected) in [
        (
            format!("{}{}", project(""), named("b", "rate_per_s = 0")),
            "limits.projects[1].rate_per_s: must be > 0",
        ),
        (
            project("max_concurrent = 0"),
            "limits.projects[0].max_concurrent: must be > 0",
        ),
        (
            project("burst = 10"),
            "limits.projects[0].burst: needs rate_per_s",
        ),
        (
            format!("{}{}", project(""), project("")),
            "limits.projects[1].name: duplicate project 'a'",
        ),
        (
            "[[limits.projects]]\nname = \"\"\n".to_string(),
            "limits.projects[0].name: must not be empty",
        ),
        (
            "[limits.project_default]\nburst = 0\n".to_string(),
            "limits.project_default.burst: must be > 0",
        ),
        (
            "[limits.project_default]\nname = \"x\"\n".to_string(),
            "limits.project_default.name",
        ),
        (project("rate_per_s = -1"), "limits.projects[0].rate_per_s"),
    ] {
        let error = error_of(&format!("{MINIMAL}{extra}"));
        assert!(error.starts_with(expected), "{extra}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

#[test]
fn the_fleet_uses_discoverys_zookeeper_unless_told_otherwise() {
    // Static discovery: no ZooKeeper, so no fleet, and no published plugins.
    assert!(parse(MINIMAL).unwrap().fleet_zookeeper().is_none());
    let published = "[[plugins]]\nname = \"routing\"\nsource = \"zookeeper\"\n";
    assert_eq!(
        error_of(&format!("{MINIMAL}{published}")),
        "plugins[0].source: \"zookeeper\" needs the fleet's ZooKeeper: zookeeper discovery or \
         fleet.connect, and fleet.enabled not false"
    );
    // fleet.connect: its own ensemble, discovery's base path default.
    let connected = parse(&format!(
        "{MINIMAL}{published}[fleet]\nconnect = \"zk1:2181,zk2:2181/gw\"\nid = \"gw-1\"\n"
    ))
    .unwrap();
    let zk = connected.fleet_zookeeper().unwrap();
    assert_eq!(zk.connect_string(), "zk1:2181,zk2:2181/gw");
    assert_eq!(zk.base_path, DEFAULT_BASE_PATH);
    assert_eq!(
        connected.plugins[0].source,
        PluginSource::Zookeeper {
            local_config: false
        }
    );
    // ZooKeeper discovery: its ensemble, chroot, base path and auth.
    let discovered = parse(
        r#"
[discovery]
kind = "zookeeper"
connect = "zk:2181/kylin-root"
metadata_prefix = "prod"
auth = "digest:kylin:secret"
"#,
    )
    .unwrap();
    let zk = discovered.fleet_zookeeper().unwrap();
    assert_eq!(zk.connect_string(), "zk:2181/kylin-root");
    assert_eq!(zk.base_path, "/kylin/prod");
    assert_eq!(zk.digest_auth.as_deref(), Some("kylin:secret"));
    // enabled = false: no fleet, even with a ZooKeeper.
    let off = parse(&format!(
        "{MINIMAL}[fleet]\nconnect = \"zk:2181\"\nenabled = false\n"
    ))
    .unwrap();
    assert!(off.fleet_zookeeper().is_none());
}

#[test]
fn fleet_and_plugin_source_errors_name_the_key() {
    for (toml, expected) in [
        (
            "[fleet]\nconnect = \"\"\n",
            "fleet.connect: must not be empty",
        ),
        (
            "[fleet]\nid = \"a/b\"\n",
            "fleet.id: 'a/b' must be non-empty and without '/'",
        ),
        (
            "[fleet]\nbase_path = \"kylin\"\n",
            "fleet.base_path: 'kylin' must start with '/'",
        ),
        (
            "[fleet]\nauth = \"kylin:secret\"\n",
            "fleet.auth: expected digest:user:password",
        ),
        ("[[plugins]]\nname = \"p\"\n", "plugins[0].path: missing"),
        (
            "[[plugins]]\nname = \"p\"\nsource = \"http\"\n",
            "plugins[0].source: unknown source 'http'",
        ),
        (
            "[fleet]\nconnect = \"zk:2181\"\n[[plugins]]\nname = \"p\"\nsource = \"zookeeper\"\npath = \"p.wasm\"\n",
            "plugins[0].path: a plugin with source = \"zookeeper\" has no path",
        ),
    ] {
        let error = error_of(&format!("{MINIMAL}{toml}"));
        assert!(error.starts_with(expected), "{toml}: {error}");
    }
}

#[test]
fn check_config_prints_a_zookeeper_plugin_as_written() {
    let config = parse(&format!(
        "{MINIMAL}[fleet]\nconnect = \"zk:2181\"\n[[plugins]]\nname = \"routing\"\nsource = \"zookeeper\"\n"
    ))
    .unwrap();
    let printed = toml::to_string_pretty(&config).unwrap();
    assert!(printed.contains("source = \"zookeeper\""), "{printed}");
    let again = parse(&printed).unwrap();
    assert_eq!(again.plugins[0].source, config.plugins[0].source);
    assert_eq!(again.fleet.connect, config.fleet.connect);
}

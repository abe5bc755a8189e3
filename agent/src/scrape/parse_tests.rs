use super::*;

const TEXT: &str = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.01"} 3102
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
# TYPE go_gc_nan gauge
go_gc_nan NaN
"#;

#[test]
fn parses_the_documented_text_example() {
    let parsed = parse(TEXT, Format::Text, 0).unwrap();
    let families = &parsed.families;
    let names: Vec<_> = families
        .iter()
        .map(|f| (f.name, f.kind, f.samples.len()))
        .collect();
    assert_eq!(
        names,
        [
            ("http_requests_total", MetricKind::Counter, 2),
            ("msdos_file_access_time_seconds", MetricKind::Untyped, 1),
            (
                "metric_without_timestamp_and_labels",
                MetricKind::Untyped,
                1
            ),
            ("something_weird", MetricKind::Untyped, 1),
            ("http_request_duration_seconds", MetricKind::Histogram, 5),
            ("rpc_duration_seconds", MetricKind::Summary, 4),
            ("go_gc_nan", MetricKind::Gauge, 1),
        ]
    );
    let requests = &families[0];
    assert_eq!(requests.help, "The total number of HTTP requests.");
    assert_eq!(requests.samples[1].value, 3.0);
    assert_eq!(requests.samples[1].timestamp_ms, Some(1395066363000));
    assert_eq!(parsed.label(&requests.samples[1], "code"), Some("400"));
    let msdos = &families[1].samples[0];
    assert_eq!(parsed.label(msdos, "path"), Some(r"C:\DIR\FILE.TXT"));
    assert_eq!(
        parsed.label(msdos, "error"),
        Some("Cannot find file:\n\"FILE.TXT\"")
    );
    assert_eq!(msdos.value, 1.458255915e9);
    let weird = &families[3].samples[0];
    assert_eq!(weird.value, f64::INFINITY);
    assert_eq!(weird.timestamp_ms, Some(-3982045));
    assert!(families[6].samples[0].value.is_nan());
    // Unescaped values are borrowed from the body.
    assert!(matches!(
        parsed.labels(&requests.samples[0])[0].1,
        Cow::Borrowed(_)
    ));
}

const OPENMETRICS: &str = r#"# TYPE acme_http_router_request_seconds summary
# UNIT acme_http_router_request_seconds seconds
# HELP acme_http_router_request_seconds Latency though all of ACME's HTTP request router.
acme_http_router_request_seconds_sum{path="/api/v1",method="GET"} 9036.32
acme_http_router_request_seconds_count{path="/api/v1",method="GET"} 807283.0
acme_http_router_request_seconds_created{path="/api/v1",method="GET"} 1605281325.0
# TYPE go_goroutines gauge
go_goroutines 69 1605281325.123
# TYPE process_cpu_seconds counter
# UNIT process_cpu_seconds seconds
# HELP process_cpu_seconds Total user and system CPU time spent in seconds.
process_cpu_seconds_total 4.20072246e+06
process_cpu_seconds_created 1605281325.5
# TYPE foo histogram
foo_bucket{le="0.0"} 0
foo_bucket{le="1e-05"} 0 # {trace_id="KOO5S4vxi0o"} 0.67
foo_bucket{le="+Inf"} 17
foo_count 17
foo_sum 324789.3
# TYPE build info
build_info{version="1.2"} 1
# TYPE state stateset
state{state="a"} 1
state{state="b"} 0
# HELP help_escapes A \"quoted\" help\\with\nnewline
# TYPE help_escapes gauge
help_escapes -Inf
# EOF
"#;

#[test]
fn parses_openmetrics() {
    let families = parse(OPENMETRICS, Format::OpenMetrics, 0).unwrap().families;
    let names: Vec<_> = families
        .iter()
        .map(|f| (f.name, f.kind, f.samples.len()))
        .collect();
    assert_eq!(
        names,
        [
            ("acme_http_router_request_seconds", MetricKind::Summary, 3),
            ("go_goroutines", MetricKind::Gauge, 1),
            ("process_cpu_seconds", MetricKind::Counter, 2),
            ("foo", MetricKind::Histogram, 5),
            ("build", MetricKind::Info, 1),
            ("state", MetricKind::StateSet, 2),
            ("help_escapes", MetricKind::Gauge, 1),
        ]
    );
    assert_eq!(families[0].unit, "seconds");
    assert_eq!(families[1].samples[0].timestamp_ms, Some(1605281325123));
    assert_eq!(families[2].samples[1].name, "process_cpu_seconds_created");
    assert_eq!(families[3].samples[1].value, 0.0);
    assert_eq!(families[6].help, "A \"quoted\" help\\with\nnewline");
    assert_eq!(families[6].samples[0].value, f64::NEG_INFINITY);
}

#[test]
fn openmetrics_needs_eof_and_nothing_after_it() {
    let err = parse("a 1\n", Format::OpenMetrics, 0).unwrap_err();
    assert!(err.message.contains("# EOF"), "{err}");
    let err = parse("a 1\n# EOF\nb 2\n", Format::OpenMetrics, 0).unwrap_err();
    assert_eq!(err.line, 3);
    assert!(parse("a 1\n# EOF", Format::OpenMetrics, 0).is_ok());
    // In 0.0.4 `# EOF` is just a comment.
    assert_eq!(
        parse("# EOF\na 1\n", Format::Text, 0)
            .unwrap()
            .families
            .len(),
        1
    );
}

#[test]
fn malformed_lines_are_errors_with_line_numbers() {
    let cases = [
        ("ok 1\n9bad 1\n", 2),
        ("a{b=\"c\" 1\n", 1),
        ("a{b=c} 1\n", 1),
        ("a{b=\"c\",b=\"d\"} 1\n", 1),
        ("a{1b=\"c\"} 1\n", 1),
        ("a\n", 1),
        ("a one\n", 1),
        ("a 1 2 3\n", 1),
        ("a 1 1.5\n", 1),
        ("# TYPE a bogus\n", 1),
        ("# TYPE 1a gauge\n", 1),
        ("a{b=\"\\", 1),
        ("a{", 1),
        ("a{b", 1),
        ("a{b=", 1),
        ("{} 1", 1),
        ("a 1\n# TYPE a counter\n", 2),
    ];
    for (body, line) in cases {
        let err = parse(body, Format::Text, 0).expect_err(body);
        assert_eq!(err.line, line, "{body:?}: {err}");
    }
}

#[test]
fn odd_but_valid_lines() {
    let body = "a{} 1\nb{x=\"1\",} 2\nc { y = \"z\" } 3\n# just a comment\n\r\nd\t4\t5\r\ne{u=\"ü\\t\"} 6\n";
    let parsed = parse(body, Format::Text, 0).unwrap();
    let families = &parsed.families;
    assert_eq!(families.len(), 5);
    assert_eq!(parsed.label(&families[1].samples[0], "x"), Some("1"));
    assert_eq!(parsed.label(&families[2].samples[0], "y"), Some("z"));
    assert_eq!(families[3].samples[0].timestamp_ms, Some(5));
    assert_eq!(parsed.label(&families[4].samples[0], "u"), Some("ü\\t"));
}

#[test]
fn samples_of_a_family_declared_earlier_find_it() {
    let body = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n# TYPE g gauge\ng 1\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_other 3\n";
    let parsed = parse(body, Format::Text, 0).unwrap();
    let families = &parsed.families;
    let names: Vec<_> = families.iter().map(|f| (f.name, f.samples.len())).collect();
    assert_eq!(names, [("h", 3), ("g", 1), ("h_other", 1)]);
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let alphabet = b"a_{}=\",# \\\n1.eE+-InfNa\t:le\"TYPE HELP EOF";
    for _ in 0..2000 {
        let len = (seed % 64) as usize;
        let mut s = String::new();
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push(alphabet[(seed % alphabet.len() as u64) as usize] as char);
        }
        let _ = parse(&s, Format::Text, 0);
        let _ = parse(&s, Format::OpenMetrics, 0);
    }
    for prefix in ["a{b=\"ü", "# HELP ü", "é{"] {
        let _ = parse(prefix, Format::Text, 0);
    }
}

#[test]
fn content_type_picks_the_format() {
    assert_eq!(
        Format::from_content_type(Some(
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        )),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::from_content_type(Some("text/plain; version=0.0.4")),
        Format::Text
    );
    assert_eq!(Format::from_content_type(None), Format::Text);
}

/// The byte-class table says what the spec's character classes say, for every ASCII byte
/// alone, after a valid first byte, and for a non-ASCII name.
#[test]
fn name_classes_follow_the_spec() {
    for b in 0u8..128 {
        let c = char::from(b);
        let word = c.is_ascii_alphanumeric() || c == '_';
        let (metric_first, label_first) = (
            c.is_ascii_alphabetic() || c == '_' || c == ':',
            c.is_ascii_alphabetic() || c == '_',
        );
        assert_eq!(is_metric_name(&c.to_string()), metric_first, "{c:?}");
        assert_eq!(is_label_name(&c.to_string()), label_first, "{c:?}");
        assert_eq!(is_metric_name(&format!("a{c}")), word || c == ':', "a{c:?}");
        assert_eq!(is_label_name(&format!("a{c}")), word, "a{c:?}");
    }
    assert!(!is_metric_name("é") && !is_label_name("aé") && !is_metric_name(""));
    // A sample line's name is checked in the same pass that finds its end.
    for bad in ["é 1\n", "a-b 1\n", "1a 1\n", "a.b{x=\"y\"} 1\n"] {
        assert!(parse(bad, Format::Text, 0).is_err(), "{bad:?}");
    }
    for good in [":a 1\n", "_ 1\n", "a:b_c9{x=\"y\"} 1\n", "a\t1\n"] {
        assert!(parse(good, Format::Text, 0).is_ok(), "{good:?}");
    }
}

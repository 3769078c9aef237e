//! A short `taskhub bench` run, so the load generator never rots. It checks that the run is
//! correct and complete, not how fast it was (speed is measured with bench/compare.sh).

use serde_json::Value;
use taskhub_tests::cli;

#[test]
fn a_short_bench_run_completes_with_every_figure() {
    let out = cli(&[
        "bench",
        "--tasks",
        "3000",
        "--workers",
        "2",
        "--sequential",
        "200",
        "--connects",
        "5",
        "--idle-sessions",
        "50",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["tasks"], 3000);
    assert_eq!(r["errors"], 0, "every result came back right");
    assert!(r["tasks_per_sec"].as_f64().unwrap() > 0.0);
    for lat in ["load_latency", "sequential_latency", "connect_auth"] {
        let l = &r[lat];
        let (p50, p99, max) = (
            l["p50_us"].as_f64().unwrap(),
            l["p99_us"].as_f64().unwrap(),
            l["max_us"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{lat}: {l}");
    }
    assert!(
        r["hub_cpu_us_per_task"].as_f64().is_some(),
        "the bench started its own hub"
    );
    assert!(r["hub_peak_rss_kib"].as_u64().unwrap() > 0);
    assert_eq!(r["idle_sessions"]["sessions"], 50);
    assert!(
        r["idle_sessions"]["tasks_per_sec_while_connected"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

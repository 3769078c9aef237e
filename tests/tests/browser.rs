//! The browser worker end to end, in real headless Chromium: the join link, 200 squares done by
//! the tab, the dashboard (its charts checked in Chromium's own screenshots), and a browser closed
//! mid-batch with a native worker finishing the rest.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_tests::cdp::{Browser, Page};
use taskhub_tests::{KEY, SubmitWithin, client, hub, in_process_worker, square_is_done};

const STATUS: &str = "window.taskhub.status()";

/// One Chromium at a time: the tests measure how work is shared between a tab and native
/// workers, which two Chromiums competing for this machine's cores would skew.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Headless Chromium with one tab on the join link of the hub at `addr`, working `queue` with
/// `workers` compute threads.
async fn tab(addr: std::net::SocketAddr, queue: &str, workers: u32) -> (Browser, Page) {
    let mut browser = Browser::start().await;
    let (page, _) = browser
        .open_worker(&format!(
            "http://{addr}/#key={KEY}&queue={queue}&workers={workers}"
        ))
        .await;
    (browser, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_tab_works_the_queue_and_hands_back_its_tasks_when_closed() {
    let _one = ONE_BROWSER.lock().await;
    let hub = hub(|_| {}).await;
    let base = format!("http://{}", hub.addr());
    let c = client(&hub.url()).await;
    let mut browser = Browser::start().await;

    // 1. Open the join link.
    let opened = Instant::now();
    let (page, status) = browser
        .open_worker(&format!("{base}/#key={KEY}&queue=tasks&workers=2"))
        .await;
    assert_eq!(status["workers"], 2, "{status}");

    // 2. 200 squares, all done by the tab (no other worker exists yet).
    let first = c
        .submit_within(
            "tasks",
            vec![json!(7)],
            PutOptions::new().kind("square"),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let join_to_first_result = opened.elapsed();
    assert_eq!(first[0].result, Some(json!("7 * 7 = 49").into()));
    let started = Instant::now();
    let replies = c
        .submit_within(
            "tasks",
            (0..200).map(|n| json!(n)),
            PutOptions::new().kind("square"),
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    for (n, r) in (0..200).zip(&replies) {
        assert_eq!(
            r.result,
            Some(json!(format!("{n} * {n} = {}", n * n)).into()),
            "{r:?}"
        );
    }
    let stats = c.stats().await.unwrap();
    let tab = stats
        .workers
        .iter()
        .find(|w| w.role == taskhub_core::Role::Browser)
        .expect("the browser session is listed");
    assert_eq!(tab.acked, 201, "the browser did every task: {stats:?}");
    eprintln!(
        "browser: join-to-first-result {:?}; 200 tiny tasks in {:?} ({:.0} tasks/s)",
        join_to_first_result,
        elapsed,
        200.0 / elapsed.as_secs_f64()
    );
    let page_status = browser.eval(&page, STATUS).await;
    assert_eq!(page_status["done"], 201, "{page_status}");
    // The tab sizes its credit window like a native worker: tiny tasks grew it past its start
    // (two compute threads + 1).
    assert!(page_status["window"].as_u64().unwrap() > 3, "{page_status}");

    // 3. The dashboard shows the queue and the browser worker.
    let dash = browser.open(&format!("{base}/dashboard#key={KEY}")).await;
    let workers = browser
        .wait_for(
            &dash,
            "(() => { const t = document.querySelector('#workers tbody').textContent; return t.includes('browser') && t; })()",
            Duration::from_secs(20),
        )
        .await;
    assert!(workers.as_str().unwrap().contains("201"), "{workers}");
    let queues = browser
        .eval(&dash, "document.querySelector('#queues tbody').textContent")
        .await;
    assert!(queues.as_str().unwrap().contains("tasks"), "{queues}");

    // 4. A long batch; close the browser mid-run; a native worker finishes everything.
    let naps = PutOptions::new().kind("sleep").reply_to("naps");
    let ids = c
        .put_many("tasks", vec![json!(300); 30], naps)
        .await
        .unwrap();
    browser
        .wait_for(
            &page,
            &format!("{STATUS}.done >= 203"),
            Duration::from_secs(30),
        )
        .await;
    browser.close().await;
    let after_close = taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = c.stats().await.unwrap();
        (s.sessions["browser"] == 0).then_some(s)
    })
    .await
    .expect("the hub notices the tab is gone");
    let tasks = after_close.queue("tasks").unwrap();
    assert_eq!(
        tasks.in_flight, 0,
        "the closed tab's leases went back to the queue"
    );
    assert!(tasks.depth > 0, "work was left when the browser closed");

    let _native = in_process_worker(&hub.url(), "tasks", 4);
    taskhub_tests::await_results(
        &c,
        "naps",
        &ids,
        Default::default(),
        Duration::from_secs(30),
    )
    .await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_names_a_wrong_key_and_reconnects_when_the_hub_restarts() {
    let _one = ONE_BROWSER.lock().await;
    let first = hub(|_| {}).await;
    let addr = first.addr();
    let mut browser = Browser::start().await;

    let wrong = browser
        .open(&format!(
            "http://{addr}/#key=not-the-key&queue=tasks&workers=1"
        ))
        .await;
    let notice = browser
        .wait_for(
            &wrong,
            "(window.taskhub && window.taskhub.notice()) || null",
            Duration::from_secs(20),
        )
        .await;
    assert!(
        notice
            .as_str()
            .unwrap()
            .starts_with("The hub refused this link's token"),
        "{notice}"
    );

    let page = browser
        .open(&format!("http://{addr}/#key={KEY}&queue=tasks&workers=1"))
        .await;
    let connected = format!("window.taskhub && {STATUS}.state === 'connected' && {STATUS}.session");
    browser
        .wait_for(&page, &connected, Duration::from_secs(20))
        .await;

    first.stop().await;
    let notice = browser
        .wait_for(
            &page,
            // The first notice may give the hub's own goodbye ("hub shutting down"); once a
            // reconnect attempt fails, the page says the hub is unreachable.
            "(() => { const n = window.taskhub.notice(); return /hub unreachable, retrying in \\d+ s/.test(n) && n; })()",
            Duration::from_secs(20),
        )
        .await;
    assert!(
        notice.as_str().unwrap().contains("hub unreachable"),
        "{notice}"
    );

    let second = taskhub::Running::start(
        &addr.to_string(),
        taskhub::Config::new(taskhub::Secret::new(KEY)),
    )
    .await
    .expect("the same port is free again");
    browser
        .wait_for(&page, &connected, Duration::from_secs(30))
        .await;
    let c = client(&second.url()).await;
    square_is_done(&c, 12, Duration::from_secs(20)).await;
    browser.close().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_finishes_running_tasks_and_hands_back_the_rest() {
    let _one = ONE_BROWSER.lock().await;
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    let (mut browser, page) = tab(hub.addr(), "naps", 2).await;
    let opts = PutOptions::new().kind("sleep").reply_to("woke");
    c.put_many("naps", vec![json!(500); 10], opts)
        .await
        .unwrap();
    browser
        .wait_for(
            &page,
            &format!("{STATUS}.running === 2"),
            Duration::from_secs(20),
        )
        .await;
    browser
        .eval(&page, "document.getElementById('stop').click()")
        .await;
    browser
        .wait_for(
            &page,
            &format!("{STATUS}.state === 'stopped'"),
            Duration::from_secs(20),
        )
        .await;
    let s = c.stats().await.unwrap();
    let naps = s.queue("naps").unwrap();
    let woke = s.queue("woke").unwrap();
    assert_eq!(naps.in_flight, 0, "{s:?}");
    assert_eq!(woke.depth, 2, "the two running naps finished: {s:?}");
    assert_eq!(naps.depth, 8, "the others went back: {s:?}");
    let notice = browser.eval(&page, "window.taskhub.notice()").await;
    assert!(notice.as_str().unwrap().starts_with("Stopped"), "{notice}");
    // Stopping tears the connection down: the tab's session leaves the hub.
    let gone = taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = c.stats().await.unwrap();
        (s.sessions["browser"] == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the stopped tab still holds a session");
    browser.close().await;
    hub.stop().await;
}

/// A frozen tab (Chromium's page lifecycle, as for a background tab or a sleeping laptop) stops
/// touching its leases: its tasks go to a native worker within about one ack-wait instead of
/// coming back to the frozen tab, and unfrozen, the tab takes tasks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_tab_loses_its_tasks_to_a_native_worker_and_catches_up_when_thawed() {
    let _one = ONE_BROWSER.lock().await;
    let hub = hub(|c| c.broker.ack_wait = Duration::from_secs(1)).await;
    let c = client(&hub.url()).await;
    let (mut browser, page) = tab(hub.addr(), "naps", 1).await;
    let opts = PutOptions::new()
        .kind("sleep")
        .reply_to("woke")
        .max_attempts(2);
    let ids = c
        .put_many("naps", vec![json!(1500); 4], opts)
        .await
        .unwrap();
    browser
        .wait_for(
            &page,
            &format!("{STATUS}.running === 1"),
            Duration::from_secs(20),
        )
        .await;
    // Slow tasks are not hoarded: one compute thread holds at most one running and one in
    // reserve, of the four.
    let held = browser.eval(&page, STATUS).await;
    let holding = held["running"].as_u64().unwrap() + held["prefetched"].as_u64().unwrap();
    assert!(held["window"] == json!(2) && holding <= 2, "{held}");
    let r = browser
        .call(
            Some(&page.session),
            "Page.setWebLifecycleState",
            json!({"state": "frozen"}),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let frozen_at = Instant::now();
    let _native = in_process_worker(&hub.url(), "naps", 4);
    taskhub_tests::await_results(
        &c,
        "woke",
        &ids,
        Default::default(),
        Duration::from_secs(20),
    )
    .await;
    // One ack-wait for the leases to expire, then one 1.5 s nap on the native worker.
    let took = frozen_at.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "the frozen tab held its tasks for {took:?}"
    );
    let stats = c.stats().await.unwrap();
    let native = stats
        .workers
        .iter()
        .find(|w| w.role == taskhub_core::Role::Worker)
        .unwrap();
    assert!(
        native.acked >= 3,
        "the native worker did the frozen tab's tasks: {stats:?}"
    );

    // Thawed, with the native worker gone, the tab does the next tasks itself.
    drop(_native);
    browser
        .call(
            Some(&page.session),
            "Page.setWebLifecycleState",
            json!({"state": "active"}),
        )
        .await;
    let replies = c
        .submit_within(
            "naps",
            vec![json!(5), json!(6)],
            PutOptions::new().kind("square"),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(replies[1].result, Some(json!("6 * 6 = 36").into()));
    browser.close().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_batching_tiny_tasks_hands_slow_ones_back_instead_of_hoarding_them() {
    let _one = ONE_BROWSER.lock().await;
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    let (mut browser, page) = tab(hub.addr(), "mixed", 1).await;
    // Tiny tasks: the tab sends its Web Worker deep batches and asks the hub for many at once.
    let tiny = c
        .submit_within(
            "mixed",
            (0..3_000).map(|n| json!(n)),
            PutOptions::new().kind("square"),
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(tiny.iter().all(|r| r.ok));
    let deep = browser.eval(&page, STATUS).await;
    assert!(deep["window"].as_u64().unwrap() > 8, "{deep}");
    // Then slow ones, all taken by the tab while its batches are still deep; a native worker
    // joins only afterwards.
    let opts = PutOptions::new().kind("primes").reply_to("mixed-done");
    let ids = c
        .put_many("mixed", vec![json!(10_000_000); 40], opts)
        .await
        .unwrap();
    taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = c.stats().await.unwrap();
        (s.queue("mixed")?.depth == 0).then_some(())
    })
    .await
    .expect("the tab took the slow tasks");
    let _native = in_process_worker(&hub.url(), "mixed", 2);
    taskhub_tests::await_results(
        &c,
        "mixed-done",
        &ids,
        Default::default(),
        Duration::from_secs(60),
    )
    .await;
    // The tab cut its Web Worker's batch at the first slow task and gave back the rest, and
    // the tasks still waiting for its Web Worker: it says how many it handed back (38 of the
    // 40 in runs here; none when it kept what waited), and the native worker, idle otherwise,
    // ran a share. How many is a race between its window growing and the tab's give-backs: 9
    // to 16 of the 40 on a 2-core machine (its debug build is slower than the tab's release
    // wasm), against 7 when the tab ran whole batches, so that bound has a margin of one or
    // two and the tab's own count carries the rest.
    let stats = c.stats().await.unwrap();
    let native = stats
        .workers
        .iter()
        .find(|w| w.role == taskhub_core::Role::Worker)
        .unwrap();
    let settled = browser.eval(&page, STATUS).await;
    // Counted from the end of the tiny tasks (whose shrinking window hands back some too).
    let handed_back =
        settled["handed_back"].as_u64().unwrap() - deep["handed_back"].as_u64().unwrap();
    eprintln!(
        "the tab handed back {handed_back} slow tasks; the native worker ran {}",
        native.acked
    );
    assert!(
        handed_back >= 20,
        "the tab kept the slow tasks: {settled} {stats:?}"
    );
    assert!(
        native.acked >= 8,
        "the tab ran whole batches of slow tasks: {stats:?}"
    );
    assert!(settled["window"].as_u64().unwrap() <= 2, "{settled}");
    browser.close().await;
    hub.stop().await;
}

/// `hub=` in the link lists several hubs: the tab works for the first, and when it goes away the
/// tab moves to the next and works there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_given_several_hubs_moves_to_the_next_when_its_hub_goes() {
    let _one = ONE_BROWSER.lock().await;
    let first = hub(|_| {}).await;
    let second = hub(|_| {}).await;
    let mut browser = Browser::start().await;
    let hubs = format!("{}/,{}/", first.url(), second.url());
    let (page, _) = browser
        .open_worker(&format!(
            "http://{}/#key={KEY}&queue=tasks&workers=1&hub={hubs}",
            first.addr()
        ))
        .await;
    let on_first = client(&first.url()).await;
    square_is_done(&on_first, 3, Duration::from_secs(20)).await;
    drop(on_first);
    first.stop().await;
    let on_second = client(&second.url()).await;
    square_is_done(&on_second, 4, Duration::from_secs(30)).await;
    let stats = on_second.stats().await.unwrap();
    assert_eq!(stats.sessions["browser"], 1, "the tab is on the second hub");
    drop(page);
    browser.close().await;
    second.stop().await;
}

/// The dashboard draws time: throughput and queue depth over the last five minutes, and each
/// worker's rate. A screenshot of each chart, taken by Chromium itself, holds the line or bars in
/// the chart's colour (the first chart colour, #2f5bd3), not just an empty canvas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_throughput_depth_and_worker_rates() {
    let _one = ONE_BROWSER.lock().await;
    let hub = hub(|_| {}).await;
    let base = format!("http://{}", hub.addr());
    let c = client(&hub.url()).await;
    let _worker = in_process_worker(&hub.url(), "charted", 1);
    let mut browser = Browser::start().await;
    let dash = browser.open(&format!("{base}/dashboard#key={KEY}")).await;
    // Work flowing while the dashboard samples: a queue that fills, then drains.
    let naps = PutOptions::new().kind("sleep");
    c.put_many("charted", vec![json!(20); 150], naps)
        .await
        .unwrap();
    let charts = browser
        .wait_for(
            &dash,
            "(() => { const c = window.taskhubCharts; return c && c.samples >= 4 && c.workers >= 1 && c.queues.includes('charted') && c; })()",
            Duration::from_secs(30),
        )
        .await;
    assert!(charts["samples"].as_u64().unwrap() >= 4, "{charts}");
    for id in ["throughput-chart", "depth-chart", "workers-chart"] {
        let rect = browser
            .eval(
                &dash,
                &format!(
                    "(() => {{ const r = document.getElementById('{id}').getBoundingClientRect(); \
                     return {{x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}}; }})()"
                ),
            )
            .await;
        assert!(rect["width"].as_f64().unwrap() > 100.0, "{id}: {rect}");
        let shot = browser
            .call(
                Some(&dash.session),
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true,
                       "clip": {"x": rect["x"], "y": rect["y"], "width": rect["width"],
                                "height": rect["height"], "scale": 1}}),
            )
            .await;
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            shot["data"].as_str().unwrap(),
        )
        .unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        let channels = info.line_size / info.width as usize;
        // Pixels close to the first chart colour (47, 91, 211): the line or the bars.
        let drawn = pixels
            .chunks(channels)
            .filter(|p| p[0].abs_diff(47) < 40 && p[1].abs_diff(91) < 40 && p[2].abs_diff(211) < 40)
            .count();
        // (The legend's swatch alone is 30.)
        assert!(drawn > 100, "{id}: only {drawn} pixels of the chart colour");
    }
    browser.close().await;
}

/// Dead letters from the dashboard: list them and requeue them with the page's own session; a
/// dashboard whose token may only read stats is told why it may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_and_requeues_dead_letters() {
    let _one = ONE_BROWSER.lock().await;
    let hub = hub(|_| {}).await;
    let base = format!("http://{}", hub.addr());
    let c = client(&hub.url()).await;
    let doomed = PutOptions::new().kind("fail").max_attempts(1);
    c.put_many("jobs", vec![json!("x"), json!("y")], doomed)
        .await
        .unwrap();
    let worker = in_process_worker(&hub.url(), "jobs", 1);
    taskhub_tests::eventually(Duration::from_secs(20), || async {
        let s = c.stats().await.unwrap();
        s.queue("jobs").is_some_and(|q| q.dead == 2).then_some(())
    })
    .await
    .expect("two dead letters");
    drop(worker);
    let mut browser = Browser::start().await;

    // A dashboard link's token may read stats only: the hub refuses, and the page says why.
    let stats_only = c
        .create_token(
            taskhub_core::Rights {
                stats: true,
                ..Default::default()
            },
            Duration::from_secs(600),
        )
        .await
        .unwrap()
        .token;
    let limited = browser
        .open(&format!("{base}/dashboard#token={stats_only}"))
        .await;
    let click = |action: &str| {
        format!(
            "(() => {{ const b = document.querySelector('button[data-action={action}][data-queue=jobs]'); \
             if (!b) return false; b.click(); return true; }})()"
        )
    };
    browser
        .wait_for(&limited, &click("requeue"), Duration::from_secs(20))
        .await;
    let said = browser
        .wait_for(
            &limited,
            "document.getElementById('action').textContent || false",
            Duration::from_secs(10),
        )
        .await;
    assert!(said.as_str().unwrap().contains("may not"), "{said}");
    assert_eq!(c.stats().await.unwrap().queue("jobs").unwrap().dead, 2);

    // With the key: list, then requeue.
    let dash = browser.open(&format!("{base}/dashboard#key={KEY}")).await;
    browser
        .wait_for(&dash, &click("list"), Duration::from_secs(20))
        .await;
    let listed = browser
        .wait_for(
            &dash,
            "(() => { const rows = document.querySelectorAll('#dead tbody tr'); return rows.length === 2 && document.querySelector('#dead tbody').textContent; })()",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        listed
            .as_str()
            .unwrap()
            .contains("gave up after 1 attempt(s)"),
        "{listed}"
    );
    browser
        .wait_for(&dash, &click("requeue"), Duration::from_secs(10))
        .await;
    let said = browser
        .wait_for(
            &dash,
            "(() => { const t = document.getElementById('action').textContent; return t.startsWith('requeued') && t; })()",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(said, json!("requeued 2 dead letter(s) on jobs"));
    let jobs = c.stats().await.unwrap();
    let jobs = jobs.queue("jobs").unwrap();
    assert_eq!((jobs.dead, jobs.depth), (0, 2));
    browser.close().await;
}

/// Minimize (or restore) the window of `page`: Chromium makes the page hidden (or visible), as
/// when a user switches away.
async fn set_minimized(browser: &mut Browser, page: &Page, minimized: bool) {
    let info = browser
        .call(Some(&page.session), "Target.getTargetInfo", json!({}))
        .await;
    let window = browser
        .call(
            None,
            "Browser.getWindowForTarget",
            json!({"targetId": info["targetInfo"]["targetId"]}),
        )
        .await;
    let state = if minimized { "minimized" } else { "normal" };
    browser
        .call(
            None,
            "Browser.setWindowBounds",
            json!({"windowId": window["windowId"], "bounds": {"windowState": state}}),
        )
        .await;
}

/// The state a browser session reported, from `stats`, once `check` holds for it.
async fn tab_state_where(
    c: &taskhub_client::Client,
    check: impl Fn(&taskhub_client::WorkerStats) -> bool,
) -> taskhub_client::WorkerStats {
    taskhub_tests::eventually(Duration::from_secs(20), || async {
        let stats = c.stats().await.ok()?;
        stats
            .workers
            .into_iter()
            .find(|w| w.role == taskhub_core::Role::Browser && check(w))
    })
    .await
    .expect("the tab reported that state")
}

/// Issue 15's browser-aware scheduling: a tab on `when=visible` stops taking tasks while its
/// window is minimized (hidden) and takes them again when it is back; a tab on the default
/// `when=always` keeps working hidden, one task at a time. The dashboard shows each tab's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_tab_follows_its_links_policy_and_the_dashboard_shows_it() {
    let _one = ONE_BROWSER.lock().await;
    let hub = hub(|_| {}).await;
    let base = format!("http://{}", hub.addr());
    let c = client(&hub.url()).await;
    let mut shy = Browser::start().await;
    let (shy_tab, _) = shy
        .open_worker(&format!(
            "{base}/#key={KEY}&queue=shy&workers=1&when=visible"
        ))
        .await;
    set_minimized(&mut shy, &shy_tab, true).await;
    let state = tab_state_where(&c, |w| w.state.as_ref().is_some_and(|s| s.paused)).await;
    assert!(!state.state.unwrap().visible);
    let shy_session = state.session;
    let consumers = c
        .stats()
        .await
        .unwrap()
        .queue("shy")
        .map_or(0, |q| q.consumers);
    assert_eq!(consumers, 0, "a paused tab does not consume");
    assert_eq!(
        shy.eval(&shy_tab, "window.taskhub.status().paused").await,
        json!(true)
    );
    let opts = PutOptions::new().kind("square").reply_to("shy-done");
    c.put_many("shy", (1..=5).map(|n| json!(n)), opts)
        .await
        .unwrap();
    // Nothing is taken while hidden (a tab that took them would be done in milliseconds).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(c.stats().await.unwrap().queue("shy").unwrap().depth, 5);

    // The dashboard, in another browser, shows the tab hidden and paused.
    let mut other = Browser::start().await;
    let dash = other.open(&format!("{base}/dashboard#key={KEY}")).await;
    let shown = other
        .wait_for(
            &dash,
            "(() => { const t = [...document.querySelectorAll('#workers td.tab-state')].map(c => c.textContent).find(t => t.includes('paused')); return t || null; })()",
            Duration::from_secs(20),
        )
        .await;
    assert!(
        shown.as_str().unwrap().starts_with("hidden · paused"),
        "{shown}"
    );

    // Back in view: it takes the five.
    set_minimized(&mut shy, &shy_tab, false).await;
    tab_state_where(&c, |w| {
        w.session == shy_session && w.state.as_ref().is_some_and(|s| s.visible && !s.paused)
    })
    .await;
    for _ in 0..5 {
        let r = c.get("shy-done", Duration::from_secs(20)).await.unwrap();
        assert_eq!(r.expect("a result once visible").payload["ok"], json!(true));
    }

    // `when=always` (the default): hidden, it still works.
    let (bold_tab, _) = other
        .open_worker(&format!("{base}/#key={KEY}&queue=bold&workers=2"))
        .await;
    set_minimized(&mut other, &bold_tab, true).await;
    tab_state_where(&c, |w| {
        w.session != shy_session && w.state.as_ref().is_some_and(|s| !s.visible && !s.paused)
    })
    .await;
    let done = c
        .submit_within(
            "bold",
            (1..=3).map(|n| json!(n)).collect::<Vec<_>>(),
            PutOptions::new().kind("square"),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(done.iter().all(|r| r.ok), "{done:?}");
    shy.close().await;
    other.close().await;
}

//! The seed's `task_master.py` on the Rust client: put ten random numbers on `tasks` for the
//! workers to square, then print the ten results from `results`.
//!
//! ```sh
//! taskhub serve --key-file hub.key &              # prints the URL
//! taskhub-worker --key-file hub.key --queue tasks &
//! TASKHUB_URL=ws://127.0.0.1:7878 TASKHUB_KEY_FILE=hub.key cargo run -p taskhub-client --example seed
//! ```
//!
//! The seed's master held the queues in its own process, so a crash lost every task; here the
//! hub holds them, and a task whose worker dies goes to another.

use std::time::Duration;

use serde_json::json;
use taskhub_client::{ConnectOptions, PutOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TASKHUB_URL").unwrap_or_else(|_| taskhub_client::DEFAULT_URL.into());
    let key = std::env::var("TASKHUB_KEY").ok();
    let key_file = std::env::var_os("TASKHUB_KEY_FILE").map(std::path::PathBuf::from);
    let token = std::env::var("TASKHUB_TOKEN").ok();
    let credentials = taskhub_client::credentials(
        key.as_deref(),
        key_file.as_deref(),
        taskhub_client::DEFAULT_KEY_ID,
        token.as_deref(),
    )?
    .ok_or("no key: set TASKHUB_KEY, TASKHUB_KEY_FILE or TASKHUB_TOKEN")?;
    let client = ConnectOptions::with_credentials(url, credentials)
        .connect()
        .await?;

    let square = PutOptions::new().kind("square").reply_to("results");
    for _ in 0..10 {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
        let n = u16::from_le_bytes(b) % 10_001;
        println!("Put task {n}...");
        client.put("tasks", json!(n), square.clone()).await?;
    }
    println!("Try get results...");
    for _ in 0..10 {
        let outcome = client
            .get("results", Duration::from_secs(10))
            .await?
            .ok_or("no result within 10 s")?
            .payload;
        match outcome["result"].as_str() {
            Some(r) if outcome["ok"] == json!(true) => println!("Result: {r}"),
            _ => println!("Result: failed: {}", outcome["error"]),
        }
    }
    client.close().await;
    println!("master exit.");
    Ok(())
}

//! `mandelbrot`: one binary for the whole example.
//!
//! - `mandelbrot worker --hub URL --key KEY --queue tiles`: a native worker running this crate's
//!   handlers (every `taskhub-worker` flag works).
//! - `mandelbrot bundle OUT_DIR`: the same handlers as a browser worker bundle, for
//!   `taskhub serve --worker-bundle OUT_DIR`.
//! - `mandelbrot render --hub URL --key KEY --queue tiles --out image.png`: submit the tiles,
//!   show progress, write the PNG, say how many tiles each worker did.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use base64::Engine;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mandelbrot::{TILE_KIND, TileResult, handlers, tiles};
use taskhub_client::{ConnectOptions, PutOptions};
use taskhub_native_worker::{HumanDuration, WorkerArgs};

/// A 1920x1080 Mandelbrot image rendered as tiles by taskhub workers: native and browser alike.
#[derive(Debug, Parser)]
#[command(name = "mandelbrot", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a native worker with this example's handlers.
    Worker(WorkerArgs),
    /// Build the browser worker bundle into OUT_DIR (needs the wasm32 target, nothing else).
    Bundle { out_dir: PathBuf },
    /// Submit the tiles, assemble the image, write a PNG.
    Render(RenderArgs),
}

#[derive(Debug, clap::Args)]
struct RenderArgs {
    /// Hub URL.
    #[arg(long, env = "TASKHUB_URL", default_value = taskhub_client::DEFAULT_URL)]
    hub: String,
    /// Shared key. Prefer --key-file: a key on the command line shows in `ps`.
    #[arg(long, env = "TASKHUB_KEY", hide_env_values = true)]
    key: Option<String>,
    /// File holding the key.
    #[arg(long, env = "TASKHUB_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Key id the key is registered under.
    #[arg(long, env = "TASKHUB_KEY_ID", default_value = "default")]
    key_id: String,
    /// A token (from `taskhub token create`, with put on the queue) instead of a key.
    #[arg(long, env = "TASKHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For a wss:// hub: trust the CA certificate(s) in this PEM file.
    #[arg(long, env = "TASKHUB_CA")]
    ca: Option<PathBuf>,
    /// Queue the workers consume.
    #[arg(long, default_value = "tiles")]
    queue: String,
    /// Where to write the PNG.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1920)]
    width: u32,
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// Tile edge, in pixels.
    #[arg(long, default_value_t = 120)]
    tile: u32,
    /// Iterations before a point counts as in the set.
    #[arg(long, default_value_t = 1000)]
    max_iter: u32,
    /// How long to wait for all tiles (`90s`, `10m`; a number alone is seconds).
    #[arg(long, default_value = "10m")]
    timeout: HumanDuration,
}

fn main() -> ExitCode {
    // `worker --config FILE` (or TASKHUB_WORKER_CONFIG): the file's settings become the worker
    // flags' defaults, as for taskhub-worker.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut warnings = Vec::new();
    if let Some(path) = taskhub_native_worker::settings::config_path(&args, "TASKHUB_WORKER_CONFIG")
    {
        match taskhub_native_worker::settings::apply_file(
            command,
            &path,
            Some("worker"),
            &[],
            &mut warnings,
        ) {
            Ok((with_file, _)) => command = with_file,
            Err(why) => {
                eprintln!("mandelbrot: {why}");
                return ExitCode::from(2);
            }
        }
    }
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&command.get_matches_from(args))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    for w in warnings {
        eprintln!("mandelbrot: {w}");
    }
    let result = match cli.command {
        Command::Worker(args) => {
            taskhub_native_worker::init_logging();
            runtime().and_then(|rt| {
                rt.block_on(args.run(handlers()))
                    .map_err(anyhow::Error::msg)
            })
        }
        Command::Bundle { out_dir } => bundle(&out_dir),
        Command::Render(args) => runtime().and_then(|rt| rt.block_on(render(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mandelbrot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

fn bundle(out_dir: &std::path::Path) -> anyhow::Result<()> {
    let manifest = taskhub_native_worker::bundle::build(
        taskhub_native_worker::this_crate!(),
        &handlers(),
        out_dir,
    )?;
    let kinds: Vec<&str> = manifest.kinds.iter().map(|k| k.kind.as_str()).collect();
    println!(
        "bundle {} ({}) written to {}",
        manifest.name,
        kinds.join(", "),
        out_dir.display()
    );
    println!(
        "serve it with: taskhub serve --worker-bundle {}, then open the printed link (it ends in &bundle={})",
        out_dir.display(),
        manifest.name
    );
    Ok(())
}

async fn render(args: RenderArgs) -> anyhow::Result<()> {
    if args.width == 0 || args.height == 0 {
        bail!("--width and --height must be at least 1");
    }
    let credentials = taskhub_client::credentials(
        args.key.as_deref(),
        args.key_file.as_deref(),
        &args.key_id,
        args.token.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!(e))?
    .ok_or_else(|| anyhow::anyhow!("no key: pass --key-file FILE, --key KEY or --token TOKEN"))?;
    let mut opts = ConnectOptions::with_credentials(&args.hub, credentials);
    opts.ca = args.ca.clone();
    let client = opts.connect().await?;
    let queue = taskhub_client::QueueName::new(args.queue.as_str())
        .with_context(|| format!("bad --queue {:?}", args.queue))?;
    let work = tiles(args.width, args.height, args.tile, args.max_iter);
    let total = work.len();
    // Tiles report how far they have got: the bar counts rendering tiles' fractions too.
    let mut reports = client.progress();
    let mut partial: std::collections::HashMap<taskhub_client::TaskId, f64> =
        std::collections::HashMap::new();
    let started = Instant::now();
    let mut pending: FuturesUnordered<_> = work
        .iter()
        .map(|t| {
            let payload = serde_json::to_value(t).unwrap_or_default();
            let tile = PutOptions::new().kind(TILE_KIND);
            let (client, queue) = (&client, &queue);
            async move {
                let mut replies = client.submit(queue.as_str(), [payload], tile).await?;
                replies
                    .pop()
                    .ok_or_else(|| taskhub_client::ClientError::Protocol("no reply".into()))
            }
        })
        .collect();
    let mut image = vec![0u8; args.width as usize * args.height as usize * 3];
    let mut by_session: BTreeMap<u64, usize> = BTreeMap::new();
    let progress = Progress::new(total);
    let deadline = tokio::time::Instant::now() + args.timeout.0;
    let mut done = 0;
    loop {
        let next = async {
            loop {
                tokio::select! {
                    reply = pending.next() => return reply,
                    Some(p) = reports.recv() => {
                        partial.insert(p.task, p.fraction);
                        progress.show(done as f64 + partial.values().sum::<f64>());
                    }
                }
            }
        };
        let Some(reply) = tokio::time::timeout_at(deadline, next)
            .await
            .with_context(|| {
                format!(
                    "timed out after {} with {done} of {total} tiles",
                    args.timeout
                )
            })?
        else {
            break;
        };
        let reply = reply?;
        partial.remove(&reply.id);
        if !reply.ok {
            bail!(
                "tile task {} failed: {}",
                reply.id,
                reply.error.unwrap_or_default()
            );
        }
        let result = reply
            .result
            .unwrap_or_default()
            .into_json()
            .unwrap_or_default();
        let tile: TileResult = serde_json::from_value(result)
            .context("a worker sent back something that is not a tile")?;
        place(&mut image, args.width, args.height, &tile)?;
        *by_session.entry(tile.session.unwrap_or(0)).or_default() += 1;
        done += 1;
        progress.show(done as f64 + partial.values().sum::<f64>());
    }
    progress.finish();
    drop(pending);
    let elapsed = started.elapsed();
    write_png(&args.out, args.width, args.height, &image)?;
    let stats = client.stats().await?;
    client.close().await;
    // A closed stdout (`render | head -1`) must not turn a finished render into a panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{total} tiles ({}x{}, max_iter {}) in {:.2} s: {:.1} tiles/s; wrote {}",
        args.width,
        args.height,
        args.max_iter,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        args.out.display()
    );
    for (session, count) in by_session {
        let who = stats.workers.iter().find(|w| w.session.0 == session);
        let label = match who {
            Some(w) => format!(
                "session {session} ({}{})",
                w.role.as_str(),
                w.name
                    .as_ref()
                    .map(|n| format!(", {n}"))
                    .unwrap_or_default()
            ),
            None => format!("session {session}"),
        };
        let _ = writeln!(out, "  {label}: {count} tiles");
    }
    Ok(())
}

/// Copy a tile's pixels into the image, after checking it fits.
fn place(image: &mut [u8], width: u32, height: u32, t: &TileResult) -> anyhow::Result<()> {
    let rgb = base64::engine::general_purpose::STANDARD
        .decode(&t.rgb)
        .context("a tile's pixels are not base64")?;
    if t.x.saturating_add(t.w) > width
        || t.y.saturating_add(t.h) > height
        || rgb.len() != t.w as usize * t.h as usize * 3
    {
        bail!("a tile at ({}, {}) does not fit the image", t.x, t.y);
    }
    let row = t.w as usize * 3;
    for (i, line) in rgb.chunks_exact(row).enumerate() {
        let at = ((t.y as usize + i) * width as usize + t.x as usize) * 3;
        image[at..at + row].copy_from_slice(line);
    }
    Ok(())
}

fn write_png(path: &std::path::Path, width: u32, height: u32, rgb: &[u8]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}

/// A progress bar on stderr when it is a terminal; silent otherwise.
struct Progress {
    total: usize,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// `done` tiles: whole ones, and the fractions that rendering tiles reported.
    fn show(&self, done: f64) {
        if !self.tty {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}", bar(done, self.total));
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// The progress bar for `done` of `total` tiles, where `done` counts the fractions rendering
/// tiles reported: `[####....] 12.5/48 tiles`.
fn bar(done: f64, total: usize) -> String {
    const WIDTH: usize = 40;
    let share = (done / total.max(1) as f64).clamp(0.0, 1.0);
    let filled = (share * WIDTH as f64) as usize;
    format!(
        "[{}{}] {done:.1}/{total} tiles",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn the_bar_counts_partly_rendered_tiles() {
        // Ten whole tiles and two halves (11.0) of forty: 11 of the 40 marks.
        let line = bar(11.0, 40);
        assert_eq!(
            line,
            format!("[{}{}] 11.0/40 tiles", "#".repeat(11), ".".repeat(29))
        );
        assert_eq!(
            bar(0.5, 4),
            format!("[{}{}] 0.5/4 tiles", "#".repeat(5), ".".repeat(35))
        );
        assert!(
            bar(9.0, 4).starts_with(&format!("[{}]", "#".repeat(40))),
            "never past full"
        );
    }
}

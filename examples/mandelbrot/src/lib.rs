//! The Mandelbrot set as taskhub tasks: the handler is written once, here, and runs in native
//! workers (`mandelbrot worker`) and, compiled to wasm32, in browser tabs (`mandelbrot bundle`).
//!
//! Tiles are pure integer-and-`f64` arithmetic (`+`, `-`, `*` only; Rust never fuses them into
//! FMAs), and colours come from an integer palette, so a tile is byte-identical whichever worker
//! computed it.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use taskhub_native_worker::{Failure, Handler, Handlers, Input, Outcome};

/// The kind of a tile task.
pub const TILE_KIND: &str = "mandelbrot_tile";
/// The kind of a one-point task: how many iterations `[re, im, max_iter]` takes to escape.
pub const POINT_KIND: &str = "mandelbrot_point";
/// Largest tile, in pixels, and most iterations a task may ask for.
pub const MAX_TILE_PIXELS: u32 = 1 << 20;
pub const MAX_ITER: u32 = 100_000;

/// One tile, `w` × `h` pixels at (`x`, `y`), of a `width` × `height` image of the whole set.
///
/// Only integers cross the wire: every worker derives the same coordinates from them (serde_json
/// does not promise to parse every float back to the same bits, and one ULP moves pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tile {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub width: u32,
    pub height: u32,
    pub max_iter: u32,
}

impl Tile {
    /// The image's view: real part of the left edge, imaginary part of the top edge, and units
    /// per pixel. The whole set (-2.5..1.0 by -1.25..1.25), centred, as large as the image allows.
    pub fn view(&self) -> (f64, f64, f64) {
        let (w, h) = (f64::from(self.width), f64::from(self.height));
        let step = (3.5 / w).max(2.5 / h);
        (-0.75 - step * w / 2.0, step * h / 2.0, step)
    }
}

/// What a tile task returns: the tile's place, its RGB pixels (row by row, base64), and the
/// session of the worker that computed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileResult {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub rgb: String,
    #[serde(default)]
    pub session: Option<u64>,
}

/// The tiles of a `width` × `height` image of the whole set, `tile` pixels square (smaller at the
/// right and bottom edges), row by row.
pub fn tiles(width: u32, height: u32, tile: u32, max_iter: u32) -> Vec<Tile> {
    let tile = tile.max(1);
    let mut out = Vec::new();
    for y in (0..height).step_by(tile as usize) {
        for x in (0..width).step_by(tile as usize) {
            out.push(Tile {
                x,
                y,
                w: tile.min(width - x),
                h: tile.min(height - y),
                width,
                height,
                max_iter,
            });
        }
    }
    out
}

/// Iterations before `c` escapes, or `max_iter` if it does not.
pub fn escape_time(re: f64, im: f64, max_iter: u32) -> u32 {
    let (mut zr, mut zi) = (0.0f64, 0.0f64);
    let mut n = 0;
    while n < max_iter {
        let (zr2, zi2) = (zr * zr, zi * zi);
        if zr2 + zi2 > 4.0 {
            break;
        }
        zi = 2.0 * zr * zi + im;
        zr = zr2 - zi2 + re;
        n += 1;
    }
    n
}

/// Ultra Fractal's palette, cycled by iteration count; points in the set are black.
const PALETTE: [[u8; 3]; 16] = [
    [66, 30, 15],
    [25, 7, 26],
    [9, 1, 47],
    [4, 4, 73],
    [0, 7, 100],
    [12, 44, 138],
    [24, 82, 177],
    [57, 125, 209],
    [134, 181, 229],
    [211, 236, 248],
    [241, 233, 191],
    [248, 201, 95],
    [255, 170, 0],
    [204, 128, 0],
    [153, 87, 0],
    [106, 52, 3],
];

/// The tile's pixels, RGB, row by row.
pub fn render(t: &Tile) -> Vec<u8> {
    render_reporting(t, |_| {})
}

/// [`render`], calling `done(fraction)` on the way: after each tenth of the rows but the last
/// (nine times for a tile of ten rows or more).
pub fn render_reporting(t: &Tile, mut done: impl FnMut(f64)) -> Vec<u8> {
    let (re_min, im_max, step) = t.view();
    let mut rgb = Vec::with_capacity((t.w * t.h * 3) as usize);
    let every = t.h.div_ceil(10).max(1);
    for py in t.y..t.y + t.h {
        let row = py - t.y;
        if row > 0 && row.is_multiple_of(every) {
            done(f64::from(row) / f64::from(t.h));
        }
        let im = im_max - f64::from(py) * step;
        for px in t.x..t.x + t.w {
            let re = re_min + f64::from(px) * step;
            let n = escape_time(re, im, t.max_iter);
            let colour = if n == t.max_iter {
                [0, 0, 0]
            } else {
                PALETTE[(n % 16) as usize]
            };
            rgb.extend_from_slice(&colour);
        }
    }
    rgb
}

/// The `mandelbrot_tile` handler: a struct, so it can see which session it runs in.
#[derive(Debug)]
pub struct TileHandler;

impl Handler for TileHandler {
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        let tile = Tile::deserialize(task.json()?)
            .map_err(|e| Failure::permanent(format!("{TILE_KIND} got a bad tile: {e}")))?;
        if tile.w == 0 || tile.h == 0 || tile.w.saturating_mul(tile.h) > MAX_TILE_PIXELS {
            return Err(Failure::permanent(format!(
                "a tile must have 1 to {MAX_TILE_PIXELS} pixels, got {}x{}",
                tile.w, tile.h
            )));
        }
        if tile.x.saturating_add(tile.w) > tile.width || tile.y.saturating_add(tile.h) > tile.height
        {
            return Err(Failure::permanent(format!(
                "a {}x{} tile at ({}, {}) does not fit a {}x{} image",
                tile.w, tile.h, tile.x, tile.y, tile.width, tile.height
            )));
        }
        if tile.max_iter == 0 || tile.max_iter > MAX_ITER {
            return Err(Failure::permanent(format!(
                "max_iter must be 1 to {MAX_ITER}, got {}",
                tile.max_iter
            )));
        }
        let result = TileResult {
            x: tile.x,
            y: tile.y,
            w: tile.w,
            h: tile.h,
            rgb: base64::engine::general_purpose::STANDARD
                .encode(render_reporting(&tile, |f| task.progress(f, None))),
            session: task.session.map(|s| s.0),
        };
        serde_json::to_value(result)
            .map(Outcome::Done)
            .map_err(|e| Failure::permanent(e.to_string()))
    }
}

/// `[re, im, max_iter]` → iterations to escape. A microsecond of work for small `max_iter`.
fn point(payload: &Value) -> Result<Value, Failure> {
    let bad = || {
        Failure::permanent(format!(
            "{POINT_KIND} expects [re, im, max_iter], got {payload}"
        ))
    };
    let (re, im, max_iter) = match payload.as_array().map(Vec::as_slice) {
        Some([re, im, n]) => (
            re.as_f64().ok_or_else(bad)?,
            im.as_f64().ok_or_else(bad)?,
            n.as_u64().ok_or_else(bad)?,
        ),
        _ => return Err(bad()),
    };
    let max_iter = u32::try_from(max_iter).unwrap_or(u32::MAX).min(MAX_ITER);
    Ok(json!(escape_time(re, im, max_iter)))
}

/// This example's handlers, the one value both workers run.
pub fn handlers() -> Handlers {
    Handlers::new()
        .heavy(TILE_KIND, TileHandler)
        .light(POINT_KIND, point)
}

taskhub_native_worker::browser_bundle!(handlers());

#[cfg(test)]
mod tests {
    use taskhub_native_worker::TaskId;

    use super::*;

    #[test]
    fn the_image_is_covered_by_tiles_exactly_once() {
        let t = tiles(1920, 1080, 120, 100);
        assert_eq!(t.len(), 16 * 9);
        let pixels: u64 = t.iter().map(|t| u64::from(t.w * t.h)).sum();
        assert_eq!(pixels, 1920 * 1080);
        let odd = tiles(100, 50, 32, 100);
        assert_eq!((odd.len(), odd[3].w, odd[7].h), (8, 4, 18));
    }

    #[test]
    fn points_in_and_out_of_the_set() {
        assert_eq!(escape_time(0.0, 0.0, 500), 500, "the origin is in the set");
        assert_eq!(escape_time(-1.0, 0.0, 500), 500);
        assert_eq!(escape_time(2.0, 2.0, 500), 1, "far out escapes at once");
        assert_eq!(point(&json!([0.5, 0.5, 100])), Ok(json!(5)));
        assert!(!point(&json!("nope")).unwrap_err().retry);
    }

    #[test]
    fn a_tile_renders_to_rgb_and_bad_tiles_are_refused_for_good() {
        let tile = &tiles(64, 36, 16, 50)[5];
        let input = |payload: &Value| {
            handlers().run_task(
                TaskId(1),
                Some(TILE_KIND),
                &payload.clone().into(),
                1,
                None,
                None,
            )
        };
        let Ok(Outcome::Done(v)) = input(&serde_json::to_value(tile).unwrap()) else {
            panic!("tile failed")
        };
        let r: TileResult = serde_json::from_value(v).unwrap();
        let rgb = base64::engine::general_purpose::STANDARD
            .decode(&r.rgb)
            .unwrap();
        assert_eq!(rgb, render(tile));
        assert_eq!(rgb.len(), 16 * 16 * 3);
        let mut huge = tile.clone();
        huge.w = 5000;
        huge.h = 5000;
        let e = input(&serde_json::to_value(&huge).unwrap()).unwrap_err();
        assert!(
            !e.retry && e.message.contains("1 to 1048576 pixels"),
            "{e:?}"
        );
    }

    #[test]
    fn a_tile_reports_its_progress_a_tenth_at_a_time() {
        let tile = &tiles(64, 40, 20, 50)[0];
        let seen = std::sync::Mutex::new(Vec::new());
        let report = |f: f64, _: Option<&str>| seen.lock().unwrap().push(f);
        let job = taskhub_native_worker::Job {
            token: 1,
            id: TaskId(1),
            kind: Some(TILE_KIND.into()),
            payload: serde_json::to_value(tile).unwrap().into(),
            attempt: 1,
            last_error: None,
            session: None,
        };
        let flag = taskhub_native_worker::Cancellation::new();
        handlers()
            .run_job(&job, &flag, Some(taskhub_native_worker::Reporter(&report)))
            .unwrap();
        let seen = seen.into_inner().unwrap();
        assert_eq!(
            seen,
            (1..10).map(|i| f64::from(i * 2) / 20.0).collect::<Vec<_>>()
        );
    }
}

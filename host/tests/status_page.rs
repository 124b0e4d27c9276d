//! The status page at `/` renders in a real browser (headless Chromium from Debian's package)
//! and shows the running pipeline, its stages and plugin versions, and live figures.
mod common;

use common::*;
use std::io::Read;
use std::process::Command;

fn chromium(args: &[&str]) -> std::process::Output {
    let output = Command::new("bash")
        .arg(repo_root().join("tests/services/chromium/chromium.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium.sh {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Width, height and the unfiltered scanlines' distinct count of an 8-bit PNG.
fn png_summary(png: &[u8]) -> (u32, u32, usize) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (mut at, mut idat) = (8, Vec::new());
    let (mut width, mut height, mut channels) = (0, 0, 0);
    while at + 8 <= png.len() {
        let length = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + length];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().unwrap());
                height = u32::from_be_bytes(data[4..8].try_into().unwrap());
                assert_eq!(data[8], 8, "8 bits per sample");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("colour type {other}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        at += 12 + length;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = width as usize * channels + 1;
    assert_eq!(raw.len(), stride * height as usize, "scanlines");
    // Rows are compared after their filter byte: a blank page has one distinct row.
    let rows: std::collections::HashSet<&[u8]> = raw.chunks(stride).map(|row| &row[1..]).collect();
    (width, height, rows.len())
}

#[test]
fn the_status_page_renders_in_chromium_and_shows_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let port = 18550;
    let base = format!("http://127.0.0.1:{port}");
    let pipeline = dir.path().join("status.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "name: status-demo\nsource:\n  generator: {{events: 100000000, rate: 10000}}\nlake:\n  uri: file://{lake}\n  commit_rows: 20000\nstages:\n  - name: clean\n    plugin: {plugins}/clean.wasm\n    layer: silver\n  - name: sessionize\n    plugin: {plugins}/sessionize.wasm\n    topics: [page_view_events]\n    layer: gold\n    write: [sessions]\n    event_time: session_start\nadmin:\n  listen: 127.0.0.1:{port}\n",
            lake = dir.path().join("lake").display(),
            plugins = plugin_dir(),
        ),
    )
    .unwrap();
    let mut host = spawn_logged(&pipeline, &dir.path().join("host.log"), &[]);
    chromium(&["install"]);
    wait_ready(&base, &mut host);
    wait_for("a first commit", || {
        get_json(&format!("{base}/pipelines/status-demo"))["last_commit"].is_object()
    });

    let dom = String::from_utf8(chromium(&["dom", &format!("{base}/")]).stdout).unwrap();
    for expected in [
        "status-demo",
        "running",
        "clean@0.1.0",
        "sessionize@0.1.0",
        "events/s",
        "last commit",
        "epoch ",
    ] {
        assert!(
            dom.contains(expected),
            "the page lacks `{expected}`:\n{dom}"
        );
    }

    let shot = dir.path().join("status.png");
    chromium(&["screenshot", &format!("{base}/"), shot.to_str().unwrap()]);
    let (width, height, distinct_rows) = png_summary(&std::fs::read(&shot).unwrap());
    assert_eq!((width, height), (1280, 900));
    assert!(
        distinct_rows > 100,
        "the screenshot is nearly blank ({distinct_rows} distinct rows)"
    );
    assert!(host.terminate().success());
}

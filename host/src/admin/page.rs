//! The status page at `/`: one server-rendered HTML page (no scripts; it reloads itself every
//! two seconds) for a person who would rather look than read logs.
use crate::live::{PipelineStatus, RunState};
use std::fmt::Write;

pub fn render(pipelines: &[PipelineStatus]) -> String {
    let mut html = String::from(HEAD);
    let _ = write!(
        html,
        "<header><h1>Sluice</h1><span>host {} · {} pipeline{}</span></header>",
        env!("CARGO_PKG_VERSION"),
        pipelines.len(),
        if pipelines.len() == 1 { "" } else { "s" }
    );
    for pipeline in pipelines {
        render_pipeline(&mut html, pipeline);
    }
    html.push_str("</body></html>\n");
    html
}

fn render_pipeline(html: &mut String, p: &PipelineStatus) {
    let state = match p.state {
        RunState::Starting => "starting",
        RunState::Running => "running",
        RunState::Stopping => "stopping",
        RunState::Finished => "finished",
        RunState::Failed => "failed",
    };
    let last_commit = match &p.last_commit {
        Some(c) => format!("epoch {} at {}", c.epoch, clock(c.at_ms)),
        None => "none yet".into(),
    };
    let layers: Vec<String> = p
        .layers
        .iter()
        .map(|(layer, rows)| format!("{} {}", escape(layer), thousands(*rows)))
        .collect();
    let _ = write!(
        html,
        r#"<section class="pipeline" id="pipeline-{id}">
<h2>{name} <small>instance {instance}</small> <span class="state {state}">{state}</span></h2>
<p class="source">{source}</p>
<div class="figures">
<div><b>{rate}</b><span>events/s</span></div>
<div><b>{records}</b><span>events this run</span></div>
<div><b>{rejected}</b><span>dead letters</span></div>
<div><b>{commit}</b><span>last commit</span></div>
</div>
<p class="layers">rows written: {layers}</p>
<table><thead><tr><th>stage</th><th>plugin</th><th>build</th><th>in</th><th>out</th><th>rejected</th><th>failed batches</th><th>swaps</th><th>last swap</th></tr></thead><tbody>
"#,
        id = escape(&p.name),
        name = escape(&p.name),
        instance = escape(&p.instance),
        source = escape(&p.source),
        rate = thousands(p.rate.round() as u64),
        records = thousands(p.records),
        rejected = thousands(p.rejected),
        commit = escape(&last_commit),
        layers = if layers.is_empty() {
            "none yet".into()
        } else {
            layers.join(" · ")
        },
    );
    for s in &p.stages {
        let _ = writeln!(
            html,
            "<tr><td>{}{}</td><td>{}</td><td title=\"{}\"><code>{}</code> {}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.name),
            if s.watch {
                " <small>(watched)</small>"
            } else {
                ""
            },
            escape(&s.plugin.label()),
            escape(&s.plugin.sha256),
            escape(&s.plugin.sha256[..12.min(s.plugin.sha256.len())]),
            escape(&s.plugin.origin),
            thousands(s.records_in),
            thousands(s.records_out),
            thousands(s.rejected),
            if s.failures > 0 { "bad" } else { "" },
            thousands(s.failures),
            s.swaps,
            escape(s.last_swap.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</tbody></table>\n<h3>Recent errors</h3>\n");
    if p.errors.is_empty() {
        html.push_str("<p class=\"quiet\">none</p>\n");
    } else {
        html.push_str("<ul class=\"errors\">\n");
        for e in p.errors.iter().rev() {
            let _ = writeln!(
                html,
                "<li><time>{}</time> {}</li>",
                clock(e.at_ms),
                escape(&e.message)
            );
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</section>\n");
}

/// `HH:MM:SS` UTC.
fn clock(at_ms: u64) -> String {
    let seconds = at_ms / 1000 % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="2">
<title>Sluice status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0 24px 24px;color:#1d2430;background:#f6f7f9}
header{display:flex;align-items:baseline;gap:16px;border-bottom:1px solid #d5d9e0;margin-bottom:16px}
header h1{margin:12px 0;font-size:22px}header span{color:#5b6473}
section.pipeline{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:4px 16px 12px;margin-bottom:16px}
h2 small{font-weight:normal;color:#5b6473;font-size:13px}
.state{font-size:12px;padding:2px 8px;border-radius:10px;vertical-align:middle;background:#e3e6eb}
.state.running{background:#d3f1dc;color:#17602f}.state.failed{background:#fbd9d9;color:#8c1c1c}
.state.stopping,.state.starting{background:#fdf0c9;color:#74580b}
.source{color:#5b6473;margin-top:-8px}
.figures{display:flex;gap:12px;margin:8px 0}.figures div{background:#f0f2f5;border-radius:6px;padding:8px 14px;min-width:120px}
.figures b{display:block;font-size:20px}.figures span{color:#5b6473;font-size:12px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2}
th{font-weight:600;color:#5b6473;font-size:12px}td.bad{color:#b42318;font-weight:600}
code{font-size:12px;background:#f0f2f5;padding:1px 4px;border-radius:3px}
.errors{font-family:ui-monospace,monospace;font-size:12px;color:#8c1c1c}.errors time{color:#5b6473}
.quiet{color:#8a93a3}
</style></head><body>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_text_are_shown_safely() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(clock(3_723_000), "01:02:03 UTC");
    }
}

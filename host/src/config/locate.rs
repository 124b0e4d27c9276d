//! Finds the line of a key path (`stages[1].plugin`) in block-style YAML text, so errors found
//! after parsing (a missing plugin file, a duplicate name) still point at a line.

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

pub fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segments.push(Segment::Key(key.to_string()));
        }
        while let Some(end) = indices.find(']') {
            if let Ok(i) = indices[1..end].parse() {
                segments.push(Segment::Index(i));
            }
            indices = &indices[end + 1..];
        }
    }
    segments
}

/// (indent, body) of a line with content; `None` for blank and comment lines.
fn content(line: &str) -> Option<(usize, &str)> {
    let body = line.trim_start();
    if body.is_empty() || body.starts_with('#') {
        return None;
    }
    Some((line.len() - body.len(), body))
}

/// Lines `[start, end)` holding one node's entries. In a list item the first line's entry
/// starts after its `- `.
struct Region {
    start: usize,
    end: usize,
    item_first_line: bool,
}

/// 1-based line of the deepest segment of `path` that could be found.
pub fn locate(text: &str, path: &[Segment]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut region = Region {
        start: 0,
        end: lines.len(),
        item_first_line: false,
    };
    let mut found = None;
    for segment in path {
        // Each entry of the region: (line, column of its key or dash, body).
        let entries = (region.start..region.end).filter_map(|n| {
            let (indent, body) = content(lines[n])?;
            if n == region.start && region.item_first_line {
                let body = body.strip_prefix('-')?.trim_start();
                Some((n, lines[n].len() - body.len(), body))
            } else {
                Some((n, indent, body))
            }
        });
        let mut column = None;
        let hit = match segment {
            Segment::Key(key) => entries
                .filter(|(_, col, _)| *col == *column.get_or_insert(*col))
                .find(|(_, _, body)| {
                    body.strip_prefix(key.as_str())
                        .is_some_and(|r| r.starts_with(':'))
                })
                .map(|(n, col, _)| (n, col, false)),
            Segment::Index(i) => entries
                .filter(|(_, col, body)| {
                    *col == *column.get_or_insert(*col) && (body.starts_with("- ") || *body == "-")
                })
                .nth(*i)
                .map(|(n, col, _)| (n, col, true)),
        };
        let Some((line, col, is_item)) = hit else {
            break;
        };
        found = Some(line + 1);
        // A node's children: the following lines indented past it (or, for a key, a list at
        // the key's own column), up to the first line that is not.
        let end = (line + 1..lines.len())
            .find(|&n| {
                content(lines[n]).is_some_and(|(indent, body)| {
                    indent < col || (indent == col && (is_item || !body.starts_with('-')))
                })
            })
            .unwrap_or(lines.len());
        region = Region {
            start: if is_item { line } else { line + 1 },
            end,
            item_first_line: is_item,
        };
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "name: demo\nsource:\n  generator:\n    events: 10\nstages:\n  - name: clean\n    plugin: a.wasm\n  - name: other\n    # comment\n    plugin: b.wasm\n    limits:\n      memory_mb: x\n";

    #[test]
    fn finds_nested_keys_and_list_items() {
        assert_eq!(locate(YAML, &parse_path("name")), Some(1));
        assert_eq!(
            locate(YAML, &parse_path("source.generator.events")),
            Some(4)
        );
        assert_eq!(locate(YAML, &parse_path("stages[0].plugin")), Some(7));
        assert_eq!(locate(YAML, &parse_path("stages[1].name")), Some(8));
        assert_eq!(locate(YAML, &parse_path("stages[1].plugin")), Some(10));
        assert_eq!(
            locate(YAML, &parse_path("stages[1].limits.memory_mb")),
            Some(12)
        );
        // Falls back to the deepest part that exists.
        assert_eq!(locate(YAML, &parse_path("stages[1].nope")), Some(8));
    }
}

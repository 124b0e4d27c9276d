//! `${VAR}` and `${VAR:-default}` substitution on the YAML text, line by line, so line numbers
//! in errors still point at the user's file.

/// Replaces `${VAR}` / `${VAR:-default}`; `$${` escapes a literal `${`. An unset variable
/// without a default is an error naming it.
pub fn substitute(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{}`", first_line(&rest[start..])))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{expr}}}` is not a variable reference"));
        }
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set and has no default (write `${{{name}:-default}}`)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::substitute;

    fn env(name: &str) -> Option<String> {
        (name == "LAKE").then(|| "file:///data/lake".to_string())
    }

    #[test]
    fn substitutes_set_unset_and_escaped() {
        assert_eq!(
            substitute("lake: ${LAKE:-file://./lake}", env).unwrap(),
            "lake: file:///data/lake"
        );
        assert_eq!(
            substitute("lake: ${NOPE:-file://./lake}", env).unwrap(),
            "lake: file://./lake"
        );
        assert_eq!(substitute("x: $${LAKE}", env).unwrap(), "x: ${LAKE}");
        assert!(
            substitute("x: ${NOPE}", env)
                .unwrap_err()
                .contains("`NOPE` is not set")
        );
        assert!(
            substitute("x: ${LAKE", env)
                .unwrap_err()
                .contains("unclosed")
        );
    }
}

//! The configuration reference (`docs/config.md`), rendered from the
//! schema's JSON Schema: key paths, types, defaults and the doc comments.

use serde_json::Value;

use crate::Config;

/// Renders the Markdown reference of every key.
pub fn markdown() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default();
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from crates/config/src/schema.rs by `cargo xtask docs`; do not edit. -->\n\n\
         madmail reads one TOML file (`madmail run --config chatmail.toml`). \
         Unknown keys are errors; `madmail check-config FILE` lists every problem \
         with its key path. Defaults are the chatmail relay defaults.\n",
    );
    section(&schema, &schema, "", &mut out);
    out
}

fn section(root: &Value, node: &Value, prefix: &str, out: &mut String) {
    let Some(properties) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    let title = if prefix.is_empty() {
        "Top level".to_owned()
    } else {
        format!("`[{prefix}]`")
    };
    let description = if prefix.is_empty() {
        ""
    } else {
        text(node, "description")
    };
    out.push_str(&format!("\n## {title}\n\n"));
    if !description.is_empty() {
        out.push_str(&format!("{description}\n\n"));
    }
    out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
    let mut tables = Vec::new();
    for (key, property) in properties {
        let target = resolve(root, property);
        if target.get("properties").is_some() {
            tables.push((key, target));
            continue;
        }
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let meaning = text(property, "description").replace('\n', " ");
        let meaning = if meaning.is_empty() {
            text(target, "description").replace('\n', " ")
        } else {
            meaning
        };
        let default = property
            .get("default")
            .map(render_default)
            .unwrap_or_else(|| "required".into());
        out.push_str(&format!(
            "| `{path}` | {} | {default} | {meaning} |\n",
            type_of(root, property)
        ));
    }
    for (key, target) in tables {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        section(root, target, &path, out);
    }
}

fn text<'a>(node: &'a Value, key: &str) -> &'a str {
    node.get(key).and_then(Value::as_str).unwrap_or("")
}

fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
    {
        Some(pointer) => root.pointer(pointer).unwrap_or(node),
        None => node,
    }
}

fn type_of(root: &Value, property: &Value) -> String {
    let target = resolve(root, property);
    if let Some(choices) = target.get("oneOf").and_then(Value::as_array) {
        let names: Vec<String> = choices
            .iter()
            .filter_map(|c| c.get("const").or_else(|| c.get("enum")?.get(0)))
            .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
            .collect();
        return names.join(" \\| ");
    }
    match target.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = target
                .get("items")
                .map(|i| type_of(root, i))
                .unwrap_or_default();
            format!("list of {item}")
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "value".into(),
    }
}

fn render_default(value: &Value) -> String {
    match value {
        Value::Null => "unset".into(),
        other => format!("`{other}`"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_reference_matches_the_schema() {
        // The run-time value stays right when a shared target directory
        // holds a test binary built from another checkout.
        let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let path = crate_dir.join("../../docs/config.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == super::markdown(),
            "docs/config.md is stale: run `cargo xtask docs`"
        );
    }
}

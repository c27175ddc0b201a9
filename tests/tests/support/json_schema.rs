//! A small JSON Schema checker for the keywords `docs/results.schema.json` uses (`type`, `enum`, `required`,
//! `properties`, `additionalProperties`, `items`, `oneOf`, `$ref` to `#/$defs/...`): the `jsonschema` crate
//! would pull an HTTP client and a regex engine into the workspace for these few rules.

use serde_json::Value;

/// Every violation of `schema` by `value`, as `path: message` lines (empty when it validates).
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, value, "$", &mut errors);
    errors
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

fn check(root: &Value, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        match r
            .strip_prefix("#/$defs/")
            .and_then(|name| root["$defs"].get(name))
        {
            Some(s) => check(root, s, v, path, errors),
            None => errors.push(format!("{path}: unresolvable $ref {r}")),
        }
        return;
    }
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)),
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        errors.push(format!("{path}: {v} is not one of {options:?}"));
    }
    if let Some(alts) = schema.get("oneOf").and_then(Value::as_array) {
        let passing = alts
            .iter()
            .filter(|s| validate_under(root, s, v, path))
            .count();
        if passing != 1 {
            errors.push(format!("{path}: {passing} of the oneOf alternatives match"));
        }
    }
    if let Value::Object(map) = v {
        for key in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = key.as_str()
                && !map.contains_key(k)
            {
                errors.push(format!("{path}: missing required `{k}`"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, item) in map {
            let sub = format!("{path}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(root, s, item, &sub, errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{path}: `{k}` is not in the schema"))
                    }
                    Some(s @ Value::Object(_)) => check(root, s, item, &sub, errors),
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(root, s, item, &format!("{path}[{i}]"), errors);
        }
    }
}

fn validate_under(root: &Value, schema: &Value, v: &Value, path: &str) -> bool {
    let mut e = Vec::new();
    check(root, schema, v, path, &mut e);
    e.is_empty()
}

/// Keys holding a space, and strings that are numbers with a unit (`"451 s"`, `"2021"`): results.json writes
/// numbers as numbers.
pub fn style_problems(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, item) in map {
                if k.contains(' ') {
                    out.push(format!("{path}: key `{k}` holds a space"));
                }
                style_problems(item, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                style_problems(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::String(s) => {
            let head = s.split(' ').next().unwrap_or_default();
            let unit = s.len() > head.len() && s[head.len() + 1..].len() <= 3;
            let numeric = head.starts_with(|c: char| c.is_ascii_digit() || c == '-')
                && head.parse::<f64>().is_ok();
            if numeric && (unit || head == s) && !path.ends_with("sha256") {
                out.push(format!("{path}: number written as the string {s:?}"));
            }
        }
        _ => {}
    }
}

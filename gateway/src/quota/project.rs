//! Which Kylin project a query belongs to, from what the gateway already
//! holds of the request: the JSON body's `project` field (Kylin's
//! `POST /kylin/api/query` body), else `?project=`, else the path where
//! Kylin puts it. Pure functions; a source that is missing or unreadable
//! (a body that is not JSON, cut off before the field, a `project` that is
//! not a string) passes to the next.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

/// The project of a request with body prefix `body` (possibly cut short),
/// query string `query` and path `path` under Kylin's `api_base`.
pub fn project_of<'a>(
    body: &'a [u8],
    query: Option<&'a str>,
    path: &'a str,
    api_base: &str,
) -> Option<Cow<'a, str>> {
    from_body(body)
        .filter(|p| !p.is_empty())
        .or_else(|| from_query(query).filter(|p| !p.is_empty()))
        .or_else(|| from_path(path, api_base).filter(|p| !p.is_empty()))
}

/// The body's top-level `project` string. The body is tokenized as JSON
/// (so a `"project"` inside the SQL string is just part of a string), and
/// nothing but that field is kept; a body cut off after the field still
/// gives it. Later duplicates win, as with Kylin's Jackson.
pub fn from_body(body: &[u8]) -> Option<Cow<'_, str>> {
    if body.is_empty() {
        return None;
    }
    let mut found = None;
    let mut json = serde_json::Deserializer::from_slice(body);
    // The error of a body cut short (or not JSON at all) is expected: what
    // was found before it stands.
    let _ = json.deserialize_map(ProjectField(&mut found));
    found
}

/// `project=` of a query string, percent-decoded.
pub fn from_query(query: Option<&str>) -> Option<Cow<'_, str>> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("project="))?;
    percent_decode(value, true)
}

/// The project segment of Kylin paths that carry one, after `api_base`:
/// `projects/{project}/...` (Kylin 5's project-scoped API) and
/// `tables/{project}/{table}` (Kylin 3/4 table metadata).
pub fn from_path<'a>(path: &'a str, api_base: &str) -> Option<Cow<'a, str>> {
    let rest = path.strip_prefix(api_base)?.strip_prefix('/')?;
    let mut segments = rest.split('/');
    let project = match (segments.next()?, segments.next()?, segments.next()) {
        ("projects", project, _) => project,
        ("tables", project, Some(table)) if !table.is_empty() => project,
        _ => return None,
    };
    percent_decode(project, false)
}

/// `%XX` decoded (and `+` as a space in a query string); borrowed when
/// there is nothing to decode, `None` when the result is not UTF-8 or an
/// escape is malformed.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<Cow<'_, str>> {
    let encoded = text.contains('%') || (plus_is_space && text.contains('+'));
    if !encoded {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Visits the top-level object, keeping the `project` string and skipping
/// every other value without building it.
struct ProjectField<'f, 'de>(&'f mut Option<Cow<'de, str>>);

impl<'de> Visitor<'de> for ProjectField<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if key == "project" {
                // A project that is not a string (null, a number) is none.
                *self.0 = map.next_value::<Text>().ok().map(|Text(v)| v);
                if self.0.is_none() {
                    return Ok(());
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A JSON string, borrowed from the body unless it has escapes (serde's
/// own `Cow<str>` always copies).
struct Text<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(v)))
    }
}

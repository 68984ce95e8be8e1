//! Path patterns for classification rules: literal segments, `{name}` or `*`
//! for exactly one segment, and a final `**` for any remainder (including
//! none). A trailing slash on the request path is ignored.

/// A compiled path pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
    /// The leading literal segments joined by `/` (no leading slash), and
    /// how many they are: compared as one string.
    literal_prefix: String,
    literal_count: usize,
    source: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("a path pattern must start with '/'")]
    NotAbsolute,
    #[error("'**' may only be the last segment")]
    RestNotLast,
    #[error("unbalanced braces in segment '{0}'")]
    Braces(String),
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<PathPattern, PatternError> {
        let rest = text.strip_prefix('/').ok_or(PatternError::NotAbsolute)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "**" if i + 1 == parts.len() => Segment::Rest,
                "**" => return Err(PatternError::RestNotLast),
                "*" => Segment::One,
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => Segment::One,
                p if p.contains('{') || p.contains('}') => {
                    return Err(PatternError::Braces(p.to_string()));
                }
                p => Segment::Literal(p.to_string()),
            };
            segments.push(segment);
        }
        let literals: Vec<&str> = segments
            .iter()
            .map_while(|segment| match segment {
                Segment::Literal(literal) => Some(literal.as_str()),
                _ => None,
            })
            .collect();
        Ok(PathPattern {
            literal_prefix: literals.join("/"),
            literal_count: literals.len(),
            segments,
            source: text.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches a request path (no query string) without allocating. The
    /// leading literal segments are compared as one string (one `memcmp`
    /// for a pattern such as `/kylin/api/query`), the rest segment by
    /// segment.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if self.literal_count == 0 {
            return self.matches_from(0, rest.split('/').filter(|_| !rest.is_empty()));
        }
        let Some(after) = rest.strip_prefix(self.literal_prefix.as_str()) else {
            return false;
        };
        match after.strip_prefix('/') {
            // Every segment after the literals, empty ones included.
            Some(tail) => self.matches_from(self.literal_count, tail.split('/')),
            None if after.is_empty() => self.matches_from(self.literal_count, std::iter::empty()),
            // The last literal is only a prefix of the path's segment.
            None => false,
        }
    }

    /// Matches the path's segments `parts` against the pattern's from
    /// segment `first` on.
    fn matches_from<'p>(&self, first: usize, mut parts: impl Iterator<Item = &'p str>) -> bool {
        for segment in &self.segments[first..] {
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.next().is_none_or(str::is_empty) {
                        return false;
                    }
                }
                Segment::Literal(literal) => {
                    if parts.next() != Some(literal.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

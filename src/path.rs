//! PLACEHOLDER until the real canonicalisation module lands (being written in parallel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request target is not in origin form")]
    NotOriginForm,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalTarget {
    pub path: String,
    pub query: Option<String>,
}
impl CanonicalTarget {
    pub fn to_target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }
}
pub fn canonicalize(raw: &[u8]) -> Result<CanonicalTarget, PathError> {
    let s = std::str::from_utf8(raw).map_err(|_| PathError::NotOriginForm)?;
    if !s.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let (p, q) = match s.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (s, None),
    };
    Ok(CanonicalTarget { path: p.to_string(), query: q })
}
pub fn canonicalize_path(raw: &str) -> Result<String, PathError> {
    canonicalize(raw.as_bytes()).map(|t| t.path)
}

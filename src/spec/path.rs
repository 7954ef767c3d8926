//! YAML paths as operators read them: `servers[3].bmc.password`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(Vec<Seg>);

impl Path {
    pub fn root() -> Self {
        Path(Vec::new())
    }

    pub fn push(&mut self, seg: Seg) {
        self.0.push(seg);
    }

    /// Removes the last segment; false when already at the root.
    pub fn pop(&mut self) -> bool {
        self.0.pop().is_some()
    }

    pub fn key(&self, key: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn segments(&self) -> &[Seg] {
        &self.0
    }
}

impl From<Vec<Seg>> for Path {
    fn from(segs: Vec<Seg>) -> Self {
        Path(segs)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl FromStr for Path {
    type Err = String;

    /// Parses the display form back; keys may not contain `.` or `[`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut segs = Vec::new();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                segs.push(Seg::Key(key.to_string()));
            }
            while let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| format!("unclosed `[` in {s}"))?;
                let n = r[..end].parse().map_err(|_| format!("bad index in {s}"))?;
                segs.push(Seg::Index(n));
                rest = &r[end + 1..];
            }
        }
        Ok(Path(segs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["servers[3].bmc.password", "a", "pdus[0]", "x[1][2].y"] {
            assert_eq!(s.parse::<Path>().unwrap().to_string(), s);
        }
    }
}

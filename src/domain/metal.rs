//! The analytes soilmon knows: the eight priority heavy metals plus hexavalent chromium.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One analyte. `Cr` is total chromium; `Cr6` is hexavalent chromium, a different analyte
/// (GB 36600 regulates Cr(VI), GB 15618 regulates total Cr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Metal {
    /// Lead 铅.
    Pb,
    /// Mercury 汞.
    Hg,
    /// Cadmium 镉.
    Cd,
    /// Total chromium 铬.
    Cr,
    /// Hexavalent chromium 六价铬.
    Cr6,
    /// Arsenic 砷.
    As,
    /// Copper 铜.
    Cu,
    /// Zinc 锌.
    Zn,
    /// Nickel 镍.
    Ni,
}

impl Metal {
    /// Every analyte, in a fixed order.
    pub const ALL: [Metal; 9] = [
        Metal::Pb,
        Metal::Hg,
        Metal::Cd,
        Metal::Cr,
        Metal::Cr6,
        Metal::As,
        Metal::Cu,
        Metal::Zn,
        Metal::Ni,
    ];

    /// The canonical symbol used on the wire, in the database and in alert topics.
    pub fn symbol(self) -> &'static str {
        match self {
            Metal::Pb => "Pb",
            Metal::Hg => "Hg",
            Metal::Cd => "Cd",
            Metal::Cr => "Cr",
            Metal::Cr6 => "Cr6",
            Metal::As => "As",
            Metal::Cu => "Cu",
            Metal::Zn => "Zn",
            Metal::Ni => "Ni",
        }
    }

    /// Parses a symbol (case-insensitive), a Chinese name, or `Cr6`/`Cr(VI)`/`六价铬`.
    pub fn parse(text: &str) -> Option<Metal> {
        let t = text.trim();
        // The usual spelling, a symbol, without allocating (a station message has eight).
        if let Some(m) = Metal::ALL
            .iter()
            .find(|m| m.symbol().eq_ignore_ascii_case(t))
        {
            return Some(*m);
        }
        let metal = match t.to_ascii_lowercase().as_str() {
            "pb" | "铅" => Metal::Pb,
            "hg" | "汞" => Metal::Hg,
            "cd" | "镉" => Metal::Cd,
            "cr" | "铬" => Metal::Cr,
            "cr6" | "cr(vi)" | "cr6+" | "cr(6+)" | "六价铬" => Metal::Cr6,
            "as" | "砷" => Metal::As,
            "cu" | "铜" => Metal::Cu,
            "zn" | "锌" => Metal::Zn,
            "ni" | "镍" => Metal::Ni,
            _ => return None,
        };
        Some(metal)
    }
}

impl fmt::Display for Metal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// Error for an analyte name soilmon does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown metal {0:?}")]
pub struct UnknownMetal(pub String);

impl FromStr for Metal {
    type Err = UnknownMetal;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metal::parse(s).ok_or_else(|| UnknownMetal(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_round_trip_and_aliases_parse() {
        for m in Metal::ALL {
            assert_eq!(Metal::parse(m.symbol()), Some(m));
            assert_eq!(Metal::parse(&m.symbol().to_uppercase()), Some(m));
        }
        let chinese = [
            ("铅", Metal::Pb),
            ("汞", Metal::Hg),
            ("镉", Metal::Cd),
            ("铬", Metal::Cr),
            ("砷", Metal::As),
            ("铜", Metal::Cu),
            ("锌", Metal::Zn),
            ("镍", Metal::Ni),
        ];
        for (name, m) in chinese {
            assert_eq!(Metal::parse(name), Some(m));
        }
        assert_eq!(Metal::parse("Cr(VI)"), Some(Metal::Cr6));
        assert_eq!(Metal::parse("cr6"), Some(Metal::Cr6));
        assert_eq!(Metal::parse("Fe"), None);
        assert_eq!(Metal::parse(""), None);
    }
}

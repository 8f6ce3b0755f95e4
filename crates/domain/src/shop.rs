//! The catalogue: money and currencies, product fields, stock adjustments and the product list
//! query (filters, sort allow-list, cursor).

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Cursor, DomainError, Limit, query::Params, tasks::UnknownStored};

/// An ISO 4217 currency code in upper case (`EUR`). Which codes a shop accepts is configuration
/// (`SHOP_CURRENCIES`); [`Currency::parse_allowed`] checks against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const EUR: Currency = Currency(*b"EUR");

    /// Three ASCII upper-case letters.
    pub fn parse(raw: &str) -> Option<Self> {
        let b = raw.as_bytes();
        (b.len() == 3 && b.iter().all(u8::is_ascii_uppercase)).then(|| Self([b[0], b[1], b[2]]))
    }

    /// One of the shop's currencies, or a 422 naming `field`.
    pub fn parse_allowed(field: &str, raw: &str, allowed: &[Currency]) -> Result<Self, DomainError> {
        match Self::parse(raw) {
            Some(c) if allowed.contains(&c) => Ok(c),
            _ => Err(DomainError::field(
                field,
                format!(
                    "must be one of {}",
                    allowed.iter().map(Currency::as_str).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        // Always three ASCII letters (checked at construction).
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Decimal places of the currency's minor unit (ISO 4217): 0 for JPY, KRW…, 3 for BHD, KWD…,
    /// 2 for the rest. `price_cents` counts minor units, so 500 JPY is ¥500 and 500 EUR is €5.00.
    pub fn exponent(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
            | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }

    /// An amount in minor units as people read it: `12.34 EUR`, `500 JPY`, `1.500 BHD`.
    pub fn format(&self, minor: i64) -> String {
        let exp = self.exponent();
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        if exp == 0 {
            return format!("{sign}{abs} {self}");
        }
        let unit = 10u64.pow(exp);
        format!(
            "{sign}{}.{:0width$} {self}",
            abs / unit,
            abs % unit,
            width = exp as usize
        )
    }

    /// Parses `SHOP_CURRENCIES` (`EUR,USD,GBP,JPY`).
    pub fn parse_list(raw: &str) -> Result<Vec<Currency>, String> {
        let mut out = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let c = Self::parse(part)
                .ok_or_else(|| format!("{part:?} is not an ISO 4217 code (three upper-case letters)"))?;
            if !out.contains(&c) {
                out.push(c);
            }
        }
        if out.is_empty() {
            return Err("lists no currency".into());
        }
        Ok(out)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::parse(s).ok_or(())
    }
}

impl TryFrom<String> for Currency {
    type Error = UnknownStored;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or(UnknownStored {
            kind: "currency",
            value: s,
        })
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("must be an ISO 4217 code (three upper-case letters)"))
    }
}

/// The highest price a product may have, in minor units (the database's CHECK agrees).
pub const MAX_PRICE: i64 = 1_000_000_000;
/// The highest stock a product may hold (and the largest single adjustment).
pub const MAX_STOCK: i64 = 1_000_000_000;

fn one_line(field: &str, raw: &str, max: usize) -> Result<String, DomainError> {
    let t = crate::text::collapse_whitespace(raw);
    if t.is_empty() {
        return Err(DomainError::field(field, "must not be empty"));
    }
    if t.chars().count() > max {
        return Err(DomainError::field(field, format!("must be at most {max} characters")));
    }
    if t.chars().any(crate::text::is_invisible) {
        return Err(DomainError::field(
            field,
            "must not contain control or invisible characters",
        ));
    }
    Ok(t)
}

/// A SKU: 1–64 of `A–Z a–z 0–9 - _ .`, unique case-insensitively.
pub fn parse_sku(raw: &str) -> Result<String, DomainError> {
    let ok = (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(DomainError::field(
            "sku",
            "must be 1 to 64 letters, digits, '-', '_' or '.'",
        ))
    }
}

/// A product name: 1–200 visible characters, white space collapsed.
pub fn parse_product_name(raw: &str) -> Result<String, DomainError> {
    one_line("name", raw, 200)
}

/// A description: at most 5,000 characters (newlines allowed, NUL not).
pub fn parse_product_description(raw: &str) -> Result<String, DomainError> {
    if raw.chars().count() > 5_000 {
        return Err(DomainError::field("description", "must be at most 5000 characters"));
    }
    if raw.contains('\0') {
        return Err(DomainError::field("description", "must not contain NUL characters"));
    }
    Ok(raw.to_owned())
}

pub fn parse_price(raw: i64) -> Result<i64, DomainError> {
    if (0..=MAX_PRICE).contains(&raw) {
        Ok(raw)
    } else {
        Err(DomainError::field(
            "price_cents",
            format!("must be between 0 and {MAX_PRICE} (minor units of the currency)"),
        ))
    }
}

pub fn parse_initial_stock(raw: i64) -> Result<i32, DomainError> {
    if (0..=MAX_STOCK).contains(&raw) {
        Ok(raw as i32)
    } else {
        Err(DomainError::field(
            "stock",
            format!("must be between 0 and {MAX_STOCK}"),
        ))
    }
}

/// A change to a product (PATCH, see [`crate::input`]): `None` leaves a field unchanged;
/// `description: Some(None)` clears it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub price_cents: Option<i64>,
    pub active: Option<bool>,
}

/// An admin stock adjustment: a non-zero delta and a reason (1–200 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockAdjustment {
    pub delta: i32,
    pub reason: String,
}

impl StockAdjustment {
    pub fn parse(delta: i64, reason: &str) -> Result<Self, DomainError> {
        let mut errors = Vec::new();
        if delta == 0 || delta.abs() > MAX_STOCK {
            errors.push(crate::FieldError::new(
                "delta",
                format!("must be non-zero, between -{MAX_STOCK} and {MAX_STOCK}"),
            ));
        }
        let reason = match one_line("reason", reason, 200) {
            Ok(r) => Some(r),
            Err(DomainError::Validation(e)) => {
                errors.extend(e);
                None
            }
        };
        match reason {
            Some(reason) if errors.is_empty() => Ok(Self {
                delta: delta as i32,
                reason,
            }),
            _ => Err(DomainError::Validation(errors)),
        }
    }
}

/// Why the stock of a product changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    Adjustment,
    OrderReserved,
    OrderReleased,
}

impl MovementKind {
    pub const ALL: [MovementKind; 3] = [Self::Adjustment, Self::OrderReserved, Self::OrderReleased];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adjustment => "adjustment",
            Self::OrderReserved => "order_reserved",
            Self::OrderReleased => "order_released",
        }
    }
}

impl TryFrom<String> for MovementKind {
    type Error = UnknownStored;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or(UnknownStored {
            kind: "stock movement kind",
            value: s,
        })
    }
}

/// The catalogue's sort allow-list; ties are broken by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductSort {
    #[serde(rename = "-created_at")]
    CreatedDesc,
    #[serde(rename = "name")]
    Name,
    #[serde(rename = "price_cents")]
    PriceAsc,
    #[serde(rename = "-price_cents")]
    PriceDesc,
}

impl ProductSort {
    pub const ALL: [ProductSort; 4] = [Self::CreatedDesc, Self::Name, Self::PriceAsc, Self::PriceDesc];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreatedDesc => "-created_at",
            Self::Name => "name",
            Self::PriceAsc => "price_cents",
            Self::PriceDesc => "-price_cents",
        }
    }
}

/// The key of the last product of a page: the sort and its value (one of `t`, `n`, `p`) and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductCursor {
    pub s: ProductSort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<DateTime<Utc>>,
    /// Lower-cased name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<i64>,
    pub id: crate::ProductId,
}

impl ProductCursor {
    fn fits(&self) -> bool {
        match self.s {
            ProductSort::CreatedDesc => self.t.is_some() && self.n.is_none() && self.p.is_none(),
            ProductSort::Name => self.t.is_none() && self.n.is_some() && self.p.is_none(),
            ProductSort::PriceAsc | ProductSort::PriceDesc => self.t.is_none() && self.n.is_none() && self.p.is_some(),
        }
    }
}

/// A parsed `GET /v1/products` query.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductListQuery {
    /// Lower-cased name substring.
    pub q: Option<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: Option<bool>,
    pub currency: Option<Currency>,
    pub sort: ProductSort,
    pub limit: Limit,
    pub after: Option<ProductCursor>,
}

impl ProductListQuery {
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, DomainError> {
        let mut p = Params::new(pairs, &[]);
        let mut out = Self {
            q: None,
            min_price: None,
            max_price: None,
            in_stock: None,
            currency: None,
            sort: ProductSort::CreatedDesc,
            limit: Limit::default(),
            after: None,
        };
        let (mut limit, mut cursor) = (None, None);
        for (key, value) in p.pairs() {
            match key {
                "q" => {
                    let t = value.trim();
                    if t.is_empty() || t.chars().count() > 100 {
                        p.error("q", "must be 1 to 100 characters");
                    } else {
                        out.q = Some(t.to_lowercase());
                    }
                }
                "min_price" => out.min_price = p.int("min_price", value, 0, MAX_PRICE),
                "max_price" => out.max_price = p.int("max_price", value, 0, MAX_PRICE),
                "in_stock" => out.in_stock = p.bool("in_stock", value),
                "currency" => match Currency::parse(value) {
                    Some(c) => out.currency = Some(c),
                    None => p.error("currency", "must be an ISO 4217 code (three upper-case letters)"),
                },
                "sort" => match ProductSort::ALL.into_iter().find(|s| s.as_str() == value) {
                    Some(s) => out.sort = s,
                    None => p.error("sort", "must be one of -created_at, name, price_cents, -price_cents"),
                },
                "limit" => limit = p.int("limit", value, 1, i64::from(Limit::MAX)),
                "cursor" => cursor = Some(value),
                other => p.unknown(other),
            }
        }
        out.limit = p.limit(limit);
        if let (Some(lo), Some(hi)) = (out.min_price, out.max_price)
            && lo > hi
        {
            p.error("min_price", "must not be above max_price");
        }
        out.after = match cursor.map(Cursor::decode::<ProductCursor>) {
            None => None,
            Some(Ok(c)) if c.s == out.sort && c.fits() => Some(c),
            Some(_) => {
                p.error("cursor", "is not a valid cursor for this sort");
                None
            }
        };
        p.finish().map(|()| out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<ProductListQuery, DomainError> {
        let pairs: Vec<(&str, &str)> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        ProductListQuery::parse(pairs)
    }

    #[test]
    fn currencies_know_their_minor_units() {
        let jpy = Currency::parse("JPY").unwrap();
        let eur = Currency::parse("EUR").unwrap();
        let bhd = Currency::parse("BHD").unwrap();
        assert_eq!(jpy.format(500), "500 JPY");
        assert_eq!(eur.format(500), "5.00 EUR");
        assert_eq!(eur.format(1234), "12.34 EUR");
        assert_eq!(eur.format(-5), "-0.05 EUR");
        assert_eq!(bhd.format(1500), "1.500 BHD");
        assert!(Currency::parse("eur").is_none() && Currency::parse("EURO").is_none());
        assert_eq!(Currency::parse_list("EUR, USD,EUR").unwrap().len(), 2);
        assert!(Currency::parse_list("EUR,euro").is_err() && Currency::parse_list("").is_err());
        let allowed = [eur, jpy];
        assert!(Currency::parse_allowed("currency", "JPY", &allowed).is_ok());
        assert!(Currency::parse_allowed("currency", "USD", &allowed).is_err());
    }

    #[test]
    fn product_fields() {
        assert!(parse_sku("AB-1_x.2").is_ok());
        assert!(parse_sku("").is_err() && parse_sku("a b").is_err() && parse_sku(&"a".repeat(65)).is_err());
        assert_eq!(parse_product_name("  Blue \u{a0} mug ").unwrap(), "Blue mug");
        assert!(parse_product_name("\u{200b}").is_err() && parse_product_name(" ").is_err());
        assert!(parse_price(-1).is_err() && parse_price(MAX_PRICE + 1).is_err() && parse_price(0).is_ok());
        assert!(parse_initial_stock(-1).is_err() && parse_initial_stock(5).unwrap() == 5);
        assert!(StockAdjustment::parse(0, "x").is_err());
        let e = StockAdjustment::parse(0, "").unwrap_err();
        assert_eq!(
            e,
            DomainError::Validation(vec![
                crate::FieldError::new(
                    "delta",
                    format!("must be non-zero, between -{MAX_STOCK} and {MAX_STOCK}")
                ),
                crate::FieldError::new("reason", "must not be empty"),
            ])
        );
        assert_eq!(StockAdjustment::parse(-3, " recount ").unwrap().reason, "recount");
    }

    #[test]
    fn list_query() {
        let q = parse("q=MUG&min_price=100&max_price=200&in_stock=true&currency=EUR&sort=name&limit=5").unwrap();
        assert_eq!(q.q.as_deref(), Some("mug"));
        assert_eq!(
            (q.min_price, q.max_price, q.in_stock),
            (Some(100), Some(200), Some(true))
        );
        assert_eq!(q.sort, ProductSort::Name);
        assert_eq!(q.limit.get(), 5);
        for bad in [
            "sort=price",
            "min_price=-1",
            "min_price=5&max_price=4",
            "in_stock=1",
            "currency=eur",
            "limit=0",
            "cursor=abc",
            "nope=1",
            "q=a&q=b",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let c = Cursor::encode(&ProductCursor {
            s: ProductSort::PriceAsc,
            t: None,
            n: None,
            p: Some(5),
            id: uuid::Uuid::nil().into(),
        });
        assert!(parse(&format!("sort=price_cents&cursor={c}")).is_ok());
        assert!(parse(&format!("sort=-price_cents&cursor={c}")).is_err());
        assert!(parse(&format!("cursor={c}")).is_err());
    }
}

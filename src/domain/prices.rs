//! The price table: credits per image by model and resolution. Defaults follow the relative
//! cost of the upstream models (a Pro or 4K image costs several Flash images); operators
//! override any entry in the TOML file (`[prices."nano-banana-pro"] 4K = 10`).

use std::collections::BTreeMap;

use super::{Model, Resolution, model::Family};

#[derive(Debug, Clone, Default)]
pub struct Prices {
    overrides: BTreeMap<(String, &'static str), i64>,
}

impl Prices {
    /// The default price of one image.
    pub fn default_unit(model: Model, resolution: Resolution) -> i64 {
        match (model.family(), resolution) {
            (Family::NanoBanana | Family::NanoBanana2Lite, _) => 1,
            (Family::NanoBanana2 | Family::NanoBanana21, Resolution::R1K) => 2,
            (Family::NanoBanana2 | Family::NanoBanana21, Resolution::R2K) => 3,
            (Family::NanoBanana2 | Family::NanoBanana21, Resolution::R4K) => 4,
            (Family::NanoBananaPro, Resolution::R4K) => 8,
            (Family::NanoBananaPro, _) => 4,
        }
    }

    /// Sets the price of one image of `model` at `resolution` (both as on the wire).
    pub fn set(&mut self, model: &str, resolution: &str, credits: i64) -> Result<(), String> {
        if Model::parse(model).is_none() {
            return Err(format!("[prices.{model:?}]: unknown model name"));
        }
        let resolution = Resolution::parse(resolution)
            .ok_or_else(|| format!("[prices.{model:?}]: {resolution:?} is not 1K, 2K or 4K"))?;
        if credits < 0 {
            return Err(format!("[prices.{model:?}]: a price cannot be negative"));
        }
        self.overrides
            .insert((model.to_owned(), resolution.as_str()), credits);
        Ok(())
    }

    pub fn unit(&self, model: Model, resolution: Resolution) -> i64 {
        self.overrides
            .get(&(model.name().to_owned(), resolution.as_str()))
            .copied()
            .unwrap_or_else(|| Prices::default_unit(model, resolution))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_and_bad_entries_are_refused() {
        let mut prices = Prices::default();
        let pro = Model::parse("nano-banana-pro").unwrap();
        assert_eq!(prices.unit(pro, Resolution::R4K), 8);
        prices.set("nano-banana-pro", "4K", 10).unwrap();
        assert_eq!(prices.unit(pro, Resolution::R4K), 10);
        assert_eq!(prices.unit(pro, Resolution::R1K), 4);
        assert!(prices.set("dall-e", "1K", 1).is_err());
        assert!(prices.set("nano-banana", "8K", 1).is_err());
        assert!(prices.set("nano-banana", "1K", -1).is_err());
    }
}

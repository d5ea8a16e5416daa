//! Synthetic activity that looks like a real exchange's: logins from varied
//! IPs and devices, 2FA resets, deposits and withdrawals with amounts and
//! currencies, short free-text notes. Never filler characters, so size and
//! compression figures mean something.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use strata_core::NewEvent;
use uuid::Uuid;

const KINDS: [(&str, u32); 10] = [
    ("login", 40),
    ("logout", 12),
    ("deposit", 12),
    ("withdrawal", 8),
    ("trade", 14),
    ("2fa_reset", 2),
    ("password_change", 2),
    ("api_key_created", 2),
    ("email_change", 1),
    ("card_payment", 7),
];

const USER_AGENTS: [&str; 8] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{v} Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.6312.99 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "ExchangeApp/5.{v}.2 (iOS 17.4; iPhone15,2)",
    "ExchangeApp/5.{v}.0 (Android 13; SM-S911B)",
    "python-requests/2.{v}.1",
];

const COUNTRIES: [(&str, &str); 10] = [
    ("GB", "London"),
    ("DE", "Berlin"),
    ("FR", "Paris"),
    ("SI", "Ljubljana"),
    ("LU", "Luxembourg"),
    ("US", "New York"),
    ("JP", "Tokyo"),
    ("ES", "Madrid"),
    ("NL", "Amsterdam"),
    ("PL", "Warsaw"),
];

const CURRENCIES: [&str; 8] = ["EUR", "USD", "GBP", "BTC", "ETH", "USDC", "SOL", "CHF"];
const METHODS: [&str; 5] = ["sepa", "swift", "card", "crypto", "faster_payments"];
const WORDS: [&str; 40] = [
    "monthly",
    "savings",
    "rent",
    "salary",
    "refund",
    "invoice",
    "trip",
    "family",
    "gift",
    "portfolio",
    "rebalance",
    "fees",
    "tax",
    "reserve",
    "payout",
    "bonus",
    "car",
    "school",
    "holiday",
    "loan",
    "repay",
    "shared",
    "account",
    "top",
    "up",
    "weekly",
    "dca",
    "order",
    "limit",
    "market",
    "sold",
    "bought",
    "position",
    "hedge",
    "cover",
    "margin",
    "spot",
    "card",
    "groceries",
    "transfer",
];

/// Draws events for a population of users.
pub struct Synth {
    rng: SmallRng,
    users: u64,
}

impl Synth {
    /// A generator over `users` users, seeded.
    pub fn new(users: u64, seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            rng: SmallRng::seed_from_u64(seed),
            users: users.max(1),
        }
    }

    /// The id of user number `n`.
    pub fn user_id(n: u64) -> String {
        format!("user-{n:07}")
    }

    /// One event for a random user.
    pub fn event(&mut self) -> NewEvent {
        let user = self.rng.gen_range(0..self.users);
        self.event_for(&Self::user_id(user))
    }

    /// One event for `user_id`.
    pub fn event_for(&mut self, user_id: &str) -> NewEvent {
        let kind = self.kind();
        let payload = self.payload(kind);
        NewEvent::new(user_id, kind).payload(payload)
    }

    fn kind(&mut self) -> &'static str {
        let total: u32 = KINDS.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.gen_range(0..total);
        for (kind, weight) in KINDS {
            if pick < weight {
                return kind;
            }
            pick -= weight;
        }
        "login"
    }

    fn ip(&mut self) -> String {
        let r = &mut self.rng;
        format!(
            "{}.{}.{}.{}",
            r.gen_range(2..223),
            r.gen_range(0..256),
            r.gen_range(0..256),
            r.gen_range(1..255)
        )
    }

    fn note(&mut self) -> String {
        let n = self.rng.gen_range(3..9);
        (0..n)
            .filter_map(|_| WORDS.choose(&mut self.rng).copied())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn payload(&mut self, kind: &str) -> Value {
        let ua_template = USER_AGENTS
            .choose(&mut self.rng)
            .copied()
            .unwrap_or("curl/8.5.0");
        let version = self.rng.gen_range(10..125).to_string();
        let (country, city) = COUNTRIES
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(("GB", "London"));
        let mut payload = json!({
            "ip": self.ip(),
            "user_agent": ua_template.replace("{v}", &version),
            "device_id": Uuid::from_u128(self.rng.gen()).to_string(),
            "session_id": format!("{:016x}", self.rng.gen::<u64>()),
            "request_id": format!("req_{:012x}", self.rng.gen::<u64>() >> 16),
            "geo": {"country": country, "city": city},
            "risk_score": (self.rng.gen_range(0..1000) as f64) / 1000.0,
        });
        let extra = match kind {
            "deposit" | "withdrawal" | "card_payment" | "trade" => {
                let currency = CURRENCIES.choose(&mut self.rng).copied().unwrap_or("EUR");
                let whole = self.rng.gen_range(1..25_000);
                let cents = self.rng.gen_range(0..100);
                json!({
                    "amount": format!("{whole}.{cents:02}"),
                    "currency": currency,
                    "method": METHODS.choose(&mut self.rng).copied().unwrap_or("sepa"),
                    "reference": format!("TX{:010}", self.rng.gen_range(0..10_000_000_000u64)),
                    "note": self.note(),
                })
            }
            "login" | "logout" => json!({
                "method": if self.rng.gen_bool(0.7) { "password+totp" } else { "passkey" },
                "success": self.rng.gen_bool(0.95),
            }),
            _ => {
                json!({"initiated_by": if self.rng.gen_bool(0.8) { "user" } else { "support" }, "note": self.note()})
            }
        };
        if let (Value::Object(base), Value::Object(more)) = (&mut payload, extra) {
            base.extend(more);
        }
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_and_about_half_a_kilobyte() {
        let mut synth = Synth::new(1000, 7);
        let limits = strata_core::EventLimits::default();
        let mut total = 0;
        for _ in 0..1000 {
            let prepared = synth
                .event()
                .prepare(&limits)
                .expect("valid synthetic event");
            total += prepared.payload_text.len();
        }
        let mean = total / 1000;
        assert!((250..700).contains(&mean), "mean payload {mean} bytes");
    }
}

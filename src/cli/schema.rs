//! `haconn schema`: the JSON Schema of the cluster spec.

use super::Outcome;

pub fn run() -> Outcome {
    outln!("{}", crate::spec::schema_text());
    Outcome::Ok
}

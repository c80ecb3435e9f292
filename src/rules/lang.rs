//! The condition language: hand-written lexer, recursive-descent parser with
//! positions, compiled once into a typed tree whose field accessors are resolved
//! per record kind at load time.
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | "any" "(" "proc.ancestors" "," expr ")" | pred | MACRO
//! pred    := FIELD (op literal | "in" list | "glob" STR | "regex" STR | "startswith" STR
//!            | "contains" STR | "in_cidr" list) | FIELD (bool field)
//! list    := "(" literal ("," literal)* ")" | LISTNAME
//! ```

mod eval;
mod fields;
mod lex;
pub(crate) mod names;
mod parse;
#[cfg(test)]
mod tests;

pub use eval::{ByteSet, CmpOp, Condition, Facts, Node};
pub use fields::{field_for_name, field_names, get, Ctx, Field, Val};
pub use lex::ParseError;
pub use parse::{compile, Defs, MAX_NESTING, MAX_TERMS};

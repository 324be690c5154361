//! A spanned tree (stub).

//! Name lookups shared by request resolution and filters: each failure names
//! the field at fault and lists what is known, with client text truncated.

use super::definition::Dataset;
use super::request::{QueryError, QueryErrorCode};

/// The canonical name of a dimension (or alias); an unknown one names `field`.
pub fn lookup_dimension<'d>(dataset: &'d Dataset, name: &str, field: &str) -> Result<&'d str, QueryError> {
    dataset.dimension_name(name).ok_or_else(|| {
        QueryError::invalid(
            QueryErrorCode::UnknownDimension,
            field,
            format!(
                "unknown dimension `{}` in dataset `{}`; known: {}",
                truncate(name),
                dataset.name,
                known(dataset.def.dimensions.keys())
            ),
        )
    })
}

/// Client text as it may appear in an error message, at most 64 characters:
/// echoing a client's 10 MB string back in an error message helps nobody.
pub fn truncate(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

/// A list of known names for an error message.
pub fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.map(String::as_str).collect::<Vec<_>>().join(", ")
}

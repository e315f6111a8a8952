//! CSV export of query answers (`Accept: text/csv` or `?format=csv`): which
//! representation a request wants, and the streamed CSV body.
//!
//! The cached form of an answer is the JSON array PostgreSQL rendered; CSV
//! is made from it on the way out, a chunk of rows at a time, so a large
//! result never exists twice in memory as text.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use serde_json::value::RawValue;

use crate::error::{ApiError, ErrorCode};

/// Rows converted per chunk of the streamed body.
const ROWS_PER_CHUNK: usize = 512;

/// How an answer goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// `?format=` wins; else the `Accept` header: CSV when `text/csv` is
    /// preferred to JSON (by quality, then by how specific the match is:
    /// `text/csv` beats a `*/*` that would also take JSON). Anything else,
    /// including no header, is JSON.
    pub fn negotiate(format: Option<&str>, headers: &HeaderMap) -> Result<Self, ApiError> {
        match format.map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => return Ok(Self::Csv),
            Some("json") => return Ok(Self::Json),
            Some(_) => {
                return Err(
                    ApiError::new(ErrorCode::InvalidRequest, "`format` must be `json` or `csv`").with_field("format"),
                )
            }
            None => {}
        }
        let mut csv = (0.0_f32, 0_u8);
        let mut json = (0.0_f32, 0_u8);
        let ranges = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for range in ranges {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let (for_csv, for_json) = match media.as_str() {
                "text/csv" => (Some(2), None),
                "text/*" => (Some(1), None),
                "application/json" => (None, Some(2)),
                "application/*" => (None, Some(1)),
                "*/*" => (Some(0), Some(0)),
                _ => (None, None),
            };
            let better = |best: &mut (f32, u8), specificity: Option<u8>| {
                if let Some(specificity) = specificity {
                    if (quality, specificity) > *best {
                        *best = (quality, specificity);
                    }
                }
            };
            better(&mut csv, for_csv);
            better(&mut json, for_json);
        }
        Ok(if csv.0 > 0.0 && csv > json {
            Self::Csv
        } else {
            Self::Json
        })
    }
}

/// One result to export: its rows (a JSON array of objects) and, for
/// period-over-period answers, the range it belongs to (a leading column).
pub struct CsvPart {
    pub data: Bytes,
    pub range: Option<String>,
}

/// A CSV body with a header row: `date_range` first when the parts carry
/// one, then `columns` (the answer's dimensions and metrics, in order).
/// Fails before sending anything when a part's data is not the expected
/// array of objects.
pub fn csv_body(columns: Vec<String>, parts: Vec<CsvPart>) -> Result<Body, ApiError> {
    let with_range = parts.iter().any(|p| p.range.is_some());
    let parts: Vec<(CsvPart, Arc<[Range<usize>]>)> = parts
        .into_iter()
        .map(|part| {
            let rows = row_ranges(&part.data).map_err(|e| {
                ApiError::new(
                    ErrorCode::InternalError,
                    "the stored answer could not be exported as CSV",
                )
                .with_cause(e.to_string())
            })?;
            Ok((part, rows))
        })
        .collect::<Result<_, ApiError>>()?;
    let columns: Arc<[String]> = columns.into();
    let mut header: Vec<&str> = Vec::with_capacity(columns.len() + 1);
    if with_range {
        header.push("date_range");
    }
    header.extend(columns.iter().map(String::as_str));
    let header = chunk(|writer| writer.write_record(&header));
    let chunks = parts.into_iter().flat_map(move |(part, rows)| {
        let columns = Arc::clone(&columns);
        let part = Arc::new(part);
        (0..rows.len().div_ceil(ROWS_PER_CHUNK)).map(move |i| {
            let start = i * ROWS_PER_CHUNK;
            let end = (start + ROWS_PER_CHUNK).min(rows.len());
            chunk(|writer| {
                for range in &rows[start..end] {
                    write_row(writer, &part, &part.data[range.clone()], &columns)?;
                }
                Ok(())
            })
        })
    });
    let stream = futures::stream::iter(std::iter::once(header).chain(chunks));
    Ok(Body::from_stream(stream))
}

/// The byte range of each element of a JSON array.
fn row_ranges(data: &[u8]) -> Result<Arc<[Range<usize>]>, serde_json::Error> {
    let rows: Vec<&RawValue> = serde_json::from_slice(data)?;
    let base = data.as_ptr() as usize;
    Ok(rows
        .iter()
        .map(|row| {
            let start = row.get().as_ptr() as usize - base;
            start..start + row.get().len()
        })
        .collect())
}

/// Runs `write` on a CSV writer over a fresh buffer; the buffer is the chunk.
fn chunk(write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>) -> Result<Bytes, std::io::Error> {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    write(&mut writer)?;
    writer.into_inner().map(Bytes::from).map_err(|e| e.into_error())
}

/// One row, its fields in `columns` order: strings unquoted from JSON,
/// numbers and booleans as PostgreSQL wrote them, null as an empty field.
fn write_row(writer: &mut csv::Writer<Vec<u8>>, part: &CsvPart, row: &[u8], columns: &[String]) -> csv::Result<()> {
    let fields: HashMap<String, &RawValue> =
        serde_json::from_slice(row).map_err(|e| csv::Error::from(std::io::Error::other(e)))?;
    if let Some(range) = &part.range {
        writer.write_field(range)?;
    }
    for column in columns {
        match fields.get(column).map(|v| v.get()) {
            None | Some("null") => writer.write_field("")?,
            Some(text) if text.starts_with('"') => {
                let text: String =
                    serde_json::from_str(text).map_err(|e| csv::Error::from(std::io::Error::other(e)))?;
                writer.write_field(text)?
            }
            Some(text) => writer.write_field(text)?,
        }
    }
    writer.write_record(None::<&[u8]>)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use futures::StreamExt;

    use super::*;

    fn accept(value: &str) -> Format {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).expect("header"));
        Format::negotiate(None, &headers).expect("negotiates")
    }

    #[test]
    fn csv_only_when_preferred_to_json() {
        assert_eq!(Format::negotiate(None, &HeaderMap::new()).ok(), Some(Format::Json));
        assert_eq!(accept("text/csv"), Format::Csv);
        assert_eq!(accept("text/csv, */*;q=0.5"), Format::Csv);
        assert_eq!(accept("text/csv, */*"), Format::Csv, "an exact type beats a wildcard");
        assert_eq!(accept("application/json, text/csv"), Format::Json, "a tie stays JSON");
        assert_eq!(accept("text/csv;q=0.5, application/json"), Format::Json);
        assert_eq!(accept("text/html,application/xhtml+xml,*/*;q=0.8"), Format::Json);
        assert_eq!(accept("text/csv;q=0"), Format::Json);
        let headers = HeaderMap::new();
        assert_eq!(Format::negotiate(Some("CSV"), &headers).ok(), Some(Format::Csv));
        assert!(Format::negotiate(Some("xml"), &headers).is_err());
    }

    async fn text(body: Body) -> String {
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[tokio::test]
    async fn rows_follow_the_columns_and_text_is_quoted_only_when_needed() {
        let data = Bytes::from_static(
            br#"[{"revenue":12.50,"channel":"iFood, \"app\"","n":null},{"channel":"Loja\nCentro","revenue":3,"n":true}]"#,
        );
        let columns = vec!["channel".to_owned(), "revenue".to_owned(), "n".to_owned()];
        let body = csv_body(columns, vec![CsvPart { data, range: None }]).expect("exports");
        assert_eq!(
            text(body).await,
            "channel,revenue,n\n\"iFood, \"\"app\"\"\",12.50,\n\"Loja\nCentro\",3,true\n"
        );
    }

    #[tokio::test]
    async fn compared_ranges_lead_each_row_and_many_rows_span_chunks() {
        let rows: Vec<String> = (0..1200)
            .map(|i| format!(r#"{{"day":"d{i}","revenue":{i}}}"#))
            .collect();
        let data = Bytes::from(format!("[{}]", rows.join(",")));
        let parts = vec![
            CsvPart {
                data: data.clone(),
                range: Some("2024-01-01/2024-01-31".into()),
            },
            CsvPart {
                data: Bytes::from_static(b"[]"),
                range: Some("2024-02-01/2024-02-29".into()),
            },
        ];
        let body = csv_body(vec!["day".into(), "revenue".into()], parts).expect("exports");
        let text = text(body).await;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1201);
        assert_eq!(lines[0], "date_range,day,revenue");
        assert_eq!(lines[1200], "2024-01-01/2024-01-31,d1199,1199");
        assert!(csv_body(
            vec![],
            vec![CsvPart {
                data: Bytes::from_static(b"{}"),
                range: None
            }]
        )
        .is_err());
    }
}

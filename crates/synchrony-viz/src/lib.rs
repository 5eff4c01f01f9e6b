//! # synchrony-viz
//!
//! Time-space diagrams of TRACE.md traces, as the papers on virtual synchrony draw them:
//! a line per process (all incarnations of a name on one line), time to the right, a shaded
//! band for each view of each group, an arrow from each send to each delivery coloured by
//! order class, marks for views, crashes, partitioned processes, new incarnations and state
//! loads, state transfer as a heavy arrow, and the checker's violations circled in red.
//!
//! ```
//! let trace = r#"{"p":"a#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","b#1"],"primary":true}
//! {"p":"b#1","i":0,"t":1,"ev":"view","group":"g","view":1,"members":["a#1","b#1"],"primary":true}
//! {"p":"a#1","i":1,"t":5,"ev":"send","group":"g","msg":"a#1/0","order":"total","view":1}
//! {"p":"a#1","i":2,"t":6,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"total","view":1}
//! {"p":"b#1","i":1,"t":9,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"total","view":1}"#;
//! let events = synchrony_trace::parse(trace).unwrap();
//! let d = synchrony_viz::Diagram::new(&events, &[]);
//! assert_eq!((d.rows.len(), d.arrows.len(), d.bands.len()), (2, 2, 2));
//! assert!(synchrony_viz::render_svg(&d).starts_with("<svg"));
//! assert!(synchrony_viz::render_html(&d, "run").contains("<canvas"));
//! ```

mod html;
mod model;
mod svg;

pub use html::render_html;
pub use model::{Arrow, Band, Diagram, Finding, Mark, MarkKind};
pub use svg::render_svg;

//! Enrichment through the tenant REST API, and the alert context built from it.

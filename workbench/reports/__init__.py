"""Reports stage: error-map panels (panels), charts (charts), the pages of one evaluation (report)
and of two side by side (comparison) in each format (html, markdown, summary), what to try next
(hints), console summaries (console) and number formatting (format)."""

"""Tables, figures and the HTML tables of the report and site stages."""

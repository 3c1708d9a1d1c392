// Starts Swagger UI on /docs. A file rather than an inline script, so that the page runs under
// Content-Security-Policy: script-src 'self'.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
  });
});

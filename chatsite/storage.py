"""Static files storage for production: compressed, hashed names, and hashed
names inside ES module imports too (so cache-busting reaches every module)."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    support_js_module_import_aggregation = True

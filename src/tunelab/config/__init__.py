"""The one typed config every stage reads (see `tunelab config schema`)."""

from tunelab.config.describe import schema_fields, schema_text, to_yaml
from tunelab.config.load import apply_override, from_dict, load_config, validate
from tunelab.config.schema import TunelabConfig

__all__ = ["TunelabConfig", "apply_override", "from_dict", "load_config", "schema_fields", "schema_text", "to_yaml", "validate"]

"""medprobe rating side: blinded rating sessions, the rating app, import/export and analysis."""

"""The core of the imagine bot: settings, kie.ai client, storage, job lifecycle, bot class."""

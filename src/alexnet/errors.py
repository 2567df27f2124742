"""The one exception type a user of the toolkit has to know about."""


class AlexNetError(RuntimeError):
    """An error the user can fix: the message says what went wrong and what to do.

    The command line prints these without a traceback and exits with status 2; library callers
    catch them like any other exception.
    """

// One request to the patchline worker's API, authenticated with the
// token credential. Returns the httpRequest response; callers check
// `status`. The token is masked and never echoed.
def call(Map args) {
    Map opts = [
        method: 'GET',
        path: '',
        body: null,
        url: env.PATCHLINE_URL,
        credentialsId: env.PATCHLINE_CREDENTIALS_ID ?: 'patchline-api-token',
    ] + args
    if (!opts.url) {
        error 'patchline: PATCHLINE_URL is not set (the worker\'s address, e.g. http://patchline.example.org:8080)'
    }
    String body = opts.body == null ? null : writeJSON(json: opts.body, returnText: true)
    def response = null
    withCredentials([string(credentialsId: opts.credentialsId, variable: 'PATCHLINE_TOKEN')]) {
        response = httpRequest(
            url: "${opts.url}/api/v1${opts.path}",
            httpMode: opts.method,
            customHeaders: [[name: 'Authorization', value: "Bearer ${env.PATCHLINE_TOKEN}", maskValue: true]],
            contentType: 'APPLICATION_JSON',
            requestBody: body,
            validResponseCodes: '100:599',
            consoleLogResponseBody: false,
            quiet: true)
    }
    return response
}

// The value of a response header, whatever its case.
String header(def response, String name) {
    def entry = response.headers.find { key, value -> key?.equalsIgnoreCase(name) }
    if (entry == null) {
        return null
    }
    return entry.value instanceof List ? entry.value[0] : entry.value
}

// The worker's message from an error response.
String message(def response) {
    try {
        return "${response.status}: ${readJSON(text: response.content).message}"
    } catch (ignored) {
        return "${response.status}: ${response.content}"
    }
}

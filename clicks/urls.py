from django.urls import path

from . import views

app_name = "clicks"

urlpatterns = [
    # The links of similar-image lists: /go/<source>/<position>/<variant>/<target>/.
    path("go/<int:source>/<int:position>/<str:variant>/<int:target>/", views.choice, name="choice"),
]
